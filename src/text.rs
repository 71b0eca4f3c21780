//! Text that came from outside (a store, a node, an archive) on its way to a terminal or a
//! log line: control characters escaped and length bounded, so a hostile manifest or file
//! name can neither repaint the operator's terminal nor flood it. Nothing here parses.

/// `s` with control characters (and backslashes) escaped, cut to at most `max` characters
/// with a note of how much was cut.
pub fn escape_for_line(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (shown, (i, c)) in s.char_indices().enumerate() {
        if shown >= max {
            out.push_str(&format!("…({} more bytes)", s.len() - i));
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bounds() {
        assert_eq!(escape_for_line("a\x1b[2Jb\n", 100), "a\\u{1b}[2Jb\\n");
        assert_eq!(escape_for_line("abcdef", 3), "abc…(3 more bytes)");
        assert_eq!(escape_for_line("x\\y", 10), "x\\\\y");
    }
}
