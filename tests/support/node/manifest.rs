//! The one static-pod manifest shape the test kubelet reads: the first container's
//! `command:` list as kubeadm writes it. Strict on purpose: anything else is an error, never
//! a guess, so a test never runs a command the manifest did not say.

/// Reads the first container's command from a static-pod manifest. No YAML library is a
/// dependency the tests can use, so this is a small, strict reader of the one shape kubeadm
/// writes: the first `command:` key with no inline value, followed by `- item` lines at the
/// key's indentation or deeper, ending at the first other line. Items are plain scalars, or
/// single- or double-quoted strings without escapes. Anything else (flow lists, multi-line
/// items, `#` comments, `key: value` items) is an error rather than a guess.
pub(super) fn parse_command(manifest: &str) -> Result<Vec<String>, String> {
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim_start() != "command:");
    let key = lines.next().ok_or("no `command:` list")?;
    let mut command = vec![];
    for line in lines {
        let item = line.trim_start_matches(' ');
        if indent(line) < indent(key) || !(item.starts_with("- ") || item == "-") {
            if indent(line) > indent(key) && !item.is_empty() {
                return Err(format!("unsupported line in `command:`: {line:?}"));
            }
            break;
        }
        command.push(scalar(item[1..].trim())?);
    }
    match command.first() {
        Some(first) if !first.is_empty() => Ok(command),
        _ => Err("empty `command:` list".into()),
    }
}

/// A plain scalar, or a quoted one without escapes (`''`, `\`); anything else is refused.
fn scalar(s: &str) -> Result<String, String> {
    for q in ['"', '\''] {
        match s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            Some(inner) if !inner.contains([q, '\\']) => return Ok(inner.to_string()),
            _ => {}
        }
    }
    let indicators = "[]{}&*!|>'\"%@`#";
    if s.is_empty()
        || s.starts_with(|c| indicators.contains(c))
        || s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
    {
        return Err(format!("unsupported item in `command:`: {s:?}"));
    }
    Ok(s.to_string())
}
