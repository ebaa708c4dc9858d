//! Splitting `-R` input into command lines the way ipvsadm does.
//!
//! ipvsadm reads restore input with a `fscanf` loop (`config_stream_read`)
//! whose quirks are part of its behaviour, so they are reproduced here:
//! words are separated by spaces, tabs and carriage returns; a line ends at
//! a newline; every word that is exactly `ipvsadm` is dropped (so lines
//! may start with the program name); lines without words are skipped.
//! There is no comment syntax: `#` is an ordinary word (a `# ...` line
//! makes ipvsadm stop with its "Try ... -h" hint, and a trailing
//! `# comment` is an unexpected argument). Input ending in whitespace
//! without a final newline loses that last line; input ending in a word
//! keeps it.

/// The command lines of `input`, each as its words (without `argv[0]`).
pub(crate) fn split(input: &[u8]) -> Vec<Vec<String>> {
    let is_ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut lines = Vec::new();
    let mut pos = 0;
    'lines: loop {
        let mut words: Vec<String> = Vec::new();
        loop {
            let Some(&c) = input.get(pos) else {
                // fscanf hit the end: a line with words is still returned.
                if !words.is_empty() {
                    lines.push(words);
                }
                return lines;
            };
            if is_ws(c) {
                // The word conversion failed: skip blanks up to a newline.
                loop {
                    let Some(&b) = input.get(pos) else {
                        // End of input inside the blanks: the line is lost.
                        return lines;
                    };
                    pos += 1;
                    match b {
                        b'\n' => {
                            if !words.is_empty() {
                                lines.push(words);
                            }
                            continue 'lines;
                        }
                        b' ' | b'\t' | b'\r' => {}
                        _ => {
                            pos -= 1;
                            break;
                        }
                    }
                }
                continue;
            }
            let start = pos;
            while input.get(pos).is_some_and(|&b| !is_ws(b)) {
                pos += 1;
            }
            let word = String::from_utf8_lossy(&input[start..pos]).into_owned();
            if word != "ipvsadm" {
                words.push(word);
            }
            if let Some(&tail) = input.get(pos) {
                pos += 1;
                if tail == b'\n' {
                    if !words.is_empty() {
                        lines.push(words);
                    }
                    continue 'lines;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(input: &str) -> Vec<Vec<String>> {
        split(input.as_bytes())
    }

    #[test]
    fn lines_split_into_words() {
        assert_eq!(
            words("-A -t 1.2.3.4:80 -s rr\n-a\t-t 1.2.3.4:80  -r 10.0.0.2:80 -m -w 1\r\n"),
            vec![
                vec!["-A", "-t", "1.2.3.4:80", "-s", "rr"],
                vec![
                    "-a",
                    "-t",
                    "1.2.3.4:80",
                    "-r",
                    "10.0.0.2:80",
                    "-m",
                    "-w",
                    "1"
                ],
            ]
        );
    }

    #[test]
    fn program_words_and_blank_lines_are_dropped() {
        assert_eq!(
            words("\n\n   \nipvsadm -C\n  ipvsadm\n-L ipvsadm -n\n"),
            vec![vec!["-C"], vec!["-L", "-n"]]
        );
    }

    #[test]
    fn hash_is_an_ordinary_word() {
        assert_eq!(words("# hello\n"), vec![vec!["#", "hello"]]);
    }

    #[test]
    fn end_of_input_rules() {
        assert_eq!(words("-C"), vec![vec!["-C"]]);
        assert_eq!(words("-C\n-L "), vec![vec!["-C"], vec!["-L"]]);
        // Trailing blanks after a blank: the last line is lost.
        assert_eq!(words("-C\n-L  "), vec![vec!["-C"]]);
        assert_eq!(words(""), Vec::<Vec<String>>::new());
    }
}
