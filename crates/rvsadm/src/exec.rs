//! Running a parsed [`Command`] against any dataplane's [`Admin`].
//!
//! This module owns what ipvsadm does after parsing: listings (through
//! [`crate::format`]), changes with their per-command error messages
//! ([`crate::errors`]), the restore loop, and the exit codes (0; 1 for a
//! failed listing; 2 for a refused command line; 255 when ipvsadm's
//! `main` returns -1). Output is collected in [`Output`] so tests can
//! compare it; the binary writes it out.
//!
//! Restore (`-R`) reads every line first, then sends runs of consecutive
//! changes through one [`Admin::apply_batch`] call (the kernel client
//! packs them into few `sendmsg` calls). Anything else on a line (a
//! listing, an error of the command line) first flushes the pending run,
//! so messages and effects come in ipvsadm's order. Like ipvsadm, a
//! refused change prints its message and the restore goes on; a command
//! line error stops it (exit 2); the exit status is that of the last line.

use rvs_model::admin::{Admin, AdminError, Op};
use rvs_model::{Info, ServiceKey};

use crate::cli::{self, Change, Command, List, ParseError, fmt};
use crate::errors::{self, Func};
use crate::format;
use crate::names::Names;
use crate::restore;
use crate::usage;

/// What a command printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Output {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Finished with ipvsadm's `result` (0 or -1); a restore goes on.
    Done(i32),
    /// ipvsadm called `exit(code)`.
    Exit(u8),
}

impl Flow {
    /// The process exit code.
    pub(crate) fn code(self) -> u8 {
        match self {
            Flow::Done(0) => 0,
            Flow::Done(_) => 255,
            Flow::Exit(code) => code,
        }
    }
}

/// Everything a command needs.
pub(crate) struct Ctx<'a> {
    pub(crate) admin: &'a mut dyn Admin,
    pub(crate) info: Info,
    pub(crate) names: &'a Names,
    pub(crate) program: String,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Runs `command`; `stdin` is read by `-R`.
pub(crate) fn run(ctx: &mut Ctx<'_>, command: &Command, stdin: &[u8], out: &mut Output) -> Flow {
    run_inner(ctx, command, stdin, out, false)
}

fn run_inner(
    ctx: &mut Ctx<'_>,
    command: &Command,
    stdin: &[u8],
    out: &mut Output,
    in_restore: bool,
) -> Flow {
    match command {
        Command::Help => {
            out.stdout.push_str(&usage::usage(&ctx.program));
            Flow::Exit(0)
        }
        Command::Version => {
            out.stdout.push_str(usage::VERSION);
            Flow::Exit(0)
        }
        Command::List { what, format } => list(ctx, what, *format, out),
        Command::Change(Change::Op(op)) => match ctx.admin.apply(op) {
            Ok(()) => Flow::Done(0),
            Err(err) => {
                report(out, Func::of(op.kind()), &err);
                Flow::Done(-1)
            }
        },
        Command::Change(Change::UnknownScheduler { edit, key }) => {
            unknown_scheduler(ctx, *edit, key, out)
        }
        Command::Restore if in_restore => {
            out.stderr
                .push_str(&ParseError::TryHelp.stderr_text(&ctx.program));
            Flow::Exit(255)
        }
        Command::Restore => restore_table(ctx, stdin, out),
    }
}

fn report(out: &mut Output, func: Func, err: &AdminError) {
    out.stderr.push_str(&errors::message(func, err));
    out.stderr.push('\n');
}

/// The kernel refuses a scheduler it does not have only after finding
/// (or not finding) the service; reproduce that order.
fn unknown_scheduler(ctx: &mut Ctx<'_>, edit: bool, key: &ServiceKey, out: &mut Output) -> Flow {
    let exists = match ctx.admin.service(key) {
        Ok(_) => true,
        Err(err) if err.errno() == Some(errors::ESRCH) => false,
        Err(err) => {
            report(
                out,
                if edit {
                    Func::UpdateService
                } else {
                    Func::AddService
                },
                &err,
            );
            return Flow::Done(-1);
        }
    };
    let (func, errno) = match (edit, exists) {
        (false, true) => (Func::AddService, errors::EEXIST),
        (false, false) => (Func::AddService, errors::ENOENT),
        (true, true) => (Func::UpdateService, errors::ENOENT),
        (true, false) => (Func::UpdateService, errors::ESRCH),
    };
    out.stderr.push_str(&errors::errno_message(func, errno));
    out.stderr.push('\n');
    Flow::Done(-1)
}

fn list(ctx: &mut Ctx<'_>, what: &List, format: u32, out: &mut Output) -> Flow {
    match what {
        List::All => {
            if format & fmt::RULE == 0 {
                out.stdout.push_str(&format::header(&ctx.info));
            }
            let mut services = match ctx.admin.services() {
                Ok(s) => s,
                Err(err) => {
                    report(out, Func::Other, &err);
                    return Flow::Exit(1);
                }
            };
            if format & fmt::NOSORT == 0 {
                let mut refs: Vec<usize> = (0..services.len()).collect();
                let snapshot = services.clone();
                format::glibc_msort(&mut refs, |a, b| {
                    format::cmp_services(&snapshot[*a], &snapshot[*b])
                });
                services = refs.into_iter().map(|i| snapshot[i].clone()).collect();
            }
            out.stdout.push_str(&format::title(format));
            for svc in &services {
                let dests = match ctx.admin.destinations(&svc.service.key) {
                    Ok(d) => d,
                    Err(err) => {
                        report(out, Func::GetDests, &err);
                        return Flow::Exit(1);
                    }
                };
                format::service_entry(&mut out.stdout, svc, &dests, format, ctx.names);
            }
            Flow::Done(0)
        }
        List::Service(key) => {
            let svc = match ctx.admin.service(key) {
                Ok(s) => s,
                Err(err) => {
                    report(out, Func::GetService, &err);
                    return Flow::Exit(1);
                }
            };
            out.stdout.push_str(&format::title(format));
            let dests = match ctx.admin.destinations(&svc.service.key) {
                Ok(d) => d,
                Err(err) => {
                    report(out, Func::GetDests, &err);
                    return Flow::Exit(1);
                }
            };
            format::service_entry(&mut out.stdout, &svc, &dests, format, ctx.names);
            Flow::Done(0)
        }
        List::Connections => match ctx.admin.connections() {
            Ok(conns) => {
                out.stdout
                    .push_str(&format::connections(&conns, format, ctx.names));
                Flow::Done(0)
            }
            Err(AdminError::Transport { .. }) => {
                out.stderr
                    .push_str("cannot open file /proc/net/ip_vs_conn\n");
                Flow::Exit(1)
            }
            Err(err) => {
                report(out, Func::Other, &err);
                Flow::Exit(1)
            }
        },
        // ipvsadm exits silently when these reads fail.
        List::Timeout => match ctx.admin.timeouts() {
            Ok(t) => {
                out.stdout.push_str(&format::timeouts(&t));
                Flow::Done(0)
            }
            Err(_) => Flow::Exit(1),
        },
        List::Daemon => match ctx.admin.daemons() {
            Ok(d) => {
                out.stdout.push_str(&format::daemons(&d));
                Flow::Done(0)
            }
            Err(_) => Flow::Exit(1),
        },
    }
}

/// Applies the pending run of changes; returns the last one's result.
fn flush(ctx: &mut Ctx<'_>, pending: &mut Vec<Op>, out: &mut Output) -> Option<i32> {
    if pending.is_empty() {
        return None;
    }
    let results = ctx.admin.apply_batch(pending);
    let mut last = 0;
    for (op, result) in pending.iter().zip(results) {
        last = match result {
            Ok(()) => 0,
            Err(err) => {
                report(out, Func::of(op.kind()), &err);
                -1
            }
        };
    }
    pending.clear();
    Some(last)
}

fn restore_table(ctx: &mut Ctx<'_>, stdin: &[u8], out: &mut Output) -> Flow {
    let mut pending: Vec<Op> = Vec::new();
    let mut result = 0;
    for words in restore::split(stdin) {
        let argv: Vec<String> = std::iter::once(ctx.program.clone()).chain(words).collect();
        match cli::parse(&argv, ctx.names) {
            Ok(inv) => match inv.command {
                Command::Change(Change::Op(op)) => pending.push(op),
                other => {
                    // This line's own result replaces the run's.
                    let _ = flush(ctx, &mut pending, out);
                    match run_inner(ctx, &other, &[], out, true) {
                        Flow::Done(r) => result = r,
                        exit @ Flow::Exit(_) => return exit,
                    }
                }
            },
            Err(err) => {
                let _ = flush(ctx, &mut pending, out);
                out.stderr.push_str(&err.stderr_text(&ctx.program));
                match err {
                    ParseError::Popt(_) => result = -1,
                    other => return Flow::Exit(other.exit_code()),
                }
            }
        }
    }
    if let Some(r) = flush(ctx, &mut pending, out) {
        result = r;
    }
    Flow::Done(result)
}
