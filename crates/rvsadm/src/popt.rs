//! A hand-written emulation of the popt option scanner ipvsadm uses.
//!
//! ipvsadm parses its command line with popt, whose rules do not map onto
//! clap or getopt: short options cluster (`-Ln`, `-lnc`); a short option's
//! argument may be attached (`-p10`, `-t10.0.0.1:80`, with one leading `=`
//! dropped) or be the next word (even one starting with `-`); an optional
//! argument (`-p [timeout]`) takes the next word only when it does not
//! start with `-`; long options need their exact name (no abbreviations)
//! and take `--name=value` or `--name value`; words that are not options
//! are collected as leftover arguments wherever they appear; `--` ends
//! option processing. Errors name the last word consumed, as popt's
//! `poptBadOption` does. This module owns that scanning; what the options
//! mean is [`crate::cli`]'s business.

/// Whether an option takes an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    None,
    Required,
    Optional,
}

/// One entry of the option table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spec<T> {
    pub(crate) long: &'static str,
    pub(crate) short: Option<char>,
    pub(crate) arg: Arg,
    pub(crate) id: T,
}

/// popt's errors, with `poptStrerror`'s text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoptError {
    BadOption,
    NoArg,
    UnwantedArg,
}

impl PoptError {
    pub(crate) fn text(self) -> &'static str {
        match self {
            PoptError::BadOption => "unknown option",
            PoptError::NoArg => "missing argument",
            PoptError::UnwantedArg => "option does not take an argument",
        }
    }
}

/// The scanner over one argument vector (element 0 is the program).
#[derive(Debug)]
pub(crate) struct Scanner<'a, T: Copy> {
    table: &'a [Spec<T>],
    argv: &'a [String],
    next: usize,
    cluster: Option<(usize, usize)>,
    only_args: bool,
    leftovers: Vec<String>,
}

impl<'a, T: Copy> Scanner<'a, T> {
    pub(crate) fn new(table: &'a [Spec<T>], argv: &'a [String]) -> Self {
        Scanner {
            table,
            argv,
            next: 1,
            cluster: None,
            only_args: false,
            leftovers: Vec::new(),
        }
    }

    /// `poptBadOption`: the last word consumed.
    pub(crate) fn bad_option(&self) -> &str {
        self.next
            .checked_sub(1)
            .and_then(|i| self.argv.get(i))
            .map_or("", String::as_str)
    }

    /// The leftover (non-option) arguments, in order.
    pub(crate) fn take_leftovers(&mut self) -> Vec<String> {
        std::mem::take(&mut self.leftovers)
    }

    /// The next option and its argument; `Ok(None)` at the end.
    pub(crate) fn next_opt(&mut self) -> Result<Option<(T, Option<String>)>, PoptError> {
        loop {
            if let Some((word, pos)) = self.cluster.take() {
                let text = self.argv[word].as_str();
                let Some(c) = text[pos..].chars().next() else {
                    continue;
                };
                let rest_pos = pos + c.len_utf8();
                let spec = self
                    .table
                    .iter()
                    .find(|s| s.short == Some(c))
                    .ok_or(PoptError::BadOption)?;
                let mut rest = &text[rest_pos..];
                if spec.arg == Arg::None {
                    if let Some(stripped) = rest.strip_prefix('=') {
                        rest = stripped;
                    }
                    if !rest.is_empty() {
                        self.cluster = Some((word, text.len() - rest.len()));
                    }
                    return Ok(Some((spec.id, None)));
                }
                if let Some(stripped) = rest.strip_prefix('=') {
                    rest = stripped;
                }
                if !rest.is_empty() {
                    return Ok(Some((spec.id, Some(rest.to_owned()))));
                }
                let arg = self.following_arg(spec.arg)?;
                return Ok(Some((spec.id, arg)));
            }
            let Some(word) = self.argv.get(self.next) else {
                return Ok(None);
            };
            let index = self.next;
            self.next += 1;
            if self.only_args {
                self.leftovers.push(word.clone());
                continue;
            }
            if word == "--" {
                self.only_args = true;
                continue;
            }
            if !word.starts_with('-') || word == "-" {
                self.leftovers.push(word.clone());
                continue;
            }
            if let Some(long) = word.strip_prefix("--") {
                let (name, value) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_owned())),
                    None => (long, None),
                };
                let spec = self
                    .table
                    .iter()
                    .find(|s| s.long == name)
                    .ok_or(PoptError::BadOption)?;
                return match (spec.arg, value) {
                    (Arg::None, Some(_)) => Err(PoptError::UnwantedArg),
                    (Arg::None, None) => Ok(Some((spec.id, None))),
                    (_, Some(v)) => Ok(Some((spec.id, Some(v)))),
                    (kind, None) => {
                        let arg = self.following_arg(kind)?;
                        Ok(Some((spec.id, arg)))
                    }
                };
            }
            self.cluster = Some((index, 1));
        }
    }

    /// An argument taken from the next word.
    fn following_arg(&mut self, kind: Arg) -> Result<Option<String>, PoptError> {
        match self.argv.get(self.next) {
            None if kind == Arg::Optional => Ok(None),
            None => Err(PoptError::NoArg),
            Some(word) if kind == Arg::Optional && word.starts_with('-') => Ok(None),
            Some(word) => {
                self.next += 1;
                Ok(Some(word.clone()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Spec<char>] = &[
        Spec {
            long: "list",
            short: Some('L'),
            arg: Arg::None,
            id: 'L',
        },
        Spec {
            long: "numeric",
            short: Some('n'),
            arg: Arg::None,
            id: 'n',
        },
        Spec {
            long: "tcp-service",
            short: Some('t'),
            arg: Arg::Required,
            id: 't',
        },
        Spec {
            long: "persistent",
            short: Some('p'),
            arg: Arg::Optional,
            id: 'p',
        },
    ];

    /// Options found, the error with the word it names, leftovers.
    type Scanned = (
        Vec<(char, Option<String>)>,
        Option<(PoptError, String)>,
        Vec<String>,
    );

    fn scan(args: &[&str]) -> Scanned {
        let argv: Vec<String> = std::iter::once("prog")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        let mut s = Scanner::new(TABLE, &argv);
        let mut opts = Vec::new();
        let err = loop {
            match s.next_opt() {
                Ok(Some(o)) => opts.push(o),
                Ok(None) => break None,
                Err(e) => break Some((e, s.bad_option().to_owned())),
            }
        };
        let left = s.take_leftovers();
        (opts, err, left)
    }

    #[test]
    fn clusters_and_attached_arguments() {
        let (opts, err, _) = scan(&["-Ln", "-t1.2.3.4:80", "-p10", "-Lt", "x"]);
        assert_eq!(err, None);
        let ids: Vec<_> = opts.iter().map(|(c, a)| (*c, a.as_deref())).collect();
        assert_eq!(
            ids,
            vec![
                ('L', None),
                ('n', None),
                ('t', Some("1.2.3.4:80")),
                ('p', Some("10")),
                ('L', None),
                ('t', Some("x"))
            ]
        );
    }

    #[test]
    fn optional_arguments_skip_dashed_words() {
        let (opts, _, _) = scan(&["-p", "-n", "-p", "20", "--persistent", "-L", "-p"]);
        let args: Vec<_> = opts.iter().map(|(c, a)| (*c, a.clone())).collect();
        assert_eq!(args[0], ('p', None));
        assert_eq!(args[2], ('p', Some("20".into())));
        assert_eq!(args[3], ('p', None));
        assert_eq!(args[5], ('p', None));
    }

    #[test]
    fn required_arguments_take_dashed_words() {
        let (opts, _, _) = scan(&["-t", "-n"]);
        assert_eq!(opts, vec![('t', Some("-n".into()))]);
    }

    #[test]
    fn errors_name_the_word() {
        assert_eq!(scan(&["-Lq"]).1, Some((PoptError::BadOption, "-Lq".into())));
        assert_eq!(
            scan(&["-L", "--num"]).1,
            Some((PoptError::BadOption, "--num".into()))
        );
        assert_eq!(scan(&["-L", "-t"]).1, Some((PoptError::NoArg, "-t".into())));
        assert_eq!(
            scan(&["--numeric=1"]).1,
            Some((PoptError::UnwantedArg, "--numeric=1".into()))
        );
    }

    #[test]
    fn leftovers_and_double_dash() {
        let (opts, err, left) = scan(&["foo", "-L", "-", "--", "-n", "bar"]);
        assert_eq!(err, None);
        assert_eq!(opts, vec![('L', None)]);
        assert_eq!(left, vec!["foo", "-", "-n", "bar"]);
    }
}
