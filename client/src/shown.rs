//! Text from the network made safe to show and to name files with. A
//! member chooses the text of its messages, the names of its files and of
//! the groups it creates, and (unchecked until the AS vouches for it) its
//! client id; printed raw, a newline in them forges a line that seems to
//! come from someone else, a terminal escape rewrites the screen, and a
//! bidirectional override reorders what is read. Everything `mlsc` prints
//! that came from the network goes through [`shown`]; every file name
//! taken from a sender goes through [`file_name`].

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: a control character
/// (C0, DEL, C1), or an invisible format character that reorders or hides
/// text (bidirectional marks, embeddings, overrides and isolates, zero-width
/// characters, the byte-order mark).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// `text` with every unsafe character written as its escape (`\n`, `\t`,
/// `\r`, or `\u{1b}`), so that it prints as one line that shows what it
/// holds; borrowed when nothing needed escaping.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A sender's file name as a name to save under: its last path component,
/// every unsafe character replaced by `_`, never hidden (a leading dot) or
/// empty (`file`).
pub fn file_name(name: &str) -> String {
    let base = std::path::Path::new(name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = base.chars().map(|c| if is_unsafe(c) { '_' } else { c }).collect();
    if clean.is_empty() || clean.starts_with('.') {
        "file".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_and_a_terminal_escape_print_as_one_plain_line() {
        let forged = "hi\ngb bob/phone: FORGED line from bob\u{1b}[2K";
        let s = shown(forged);
        assert_eq!(s, "hi\\ngb bob/phone: FORGED line from bob\\u{1b}[2K");
        assert!(!s.chars().any(is_unsafe));
        assert_eq!(shown("tab\there\r"), "tab\\there\\r");
    }

    #[test]
    fn a_bidirectional_override_is_shown_not_applied() {
        assert_eq!(shown("invoice\u{202E}fdp.exe"), "invoice\\u{202e}fdp.exe");
        assert_eq!(shown("zero\u{200B}width"), "zero\\u{200b}width");
    }

    #[test]
    fn ordinary_text_is_left_alone_and_borrowed() {
        for text in ["hello", "grüße, 你好, مرحبا", "a\\nb (a backslash and an n)", "emoji 🎉"]
        {
            assert!(matches!(shown(text), Cow::Borrowed(t) if t == text), "{text}");
        }
    }

    #[test]
    fn file_names_keep_their_last_component_without_unsafe_characters() {
        assert_eq!(file_name("notes.txt"), "notes.txt");
        assert_eq!(file_name("../../etc/passwd"), "passwd");
        assert_eq!(file_name("red\u{1b}[31m\nname.txt"), "red_[31m_name.txt");
        assert_eq!(file_name(".bashrc"), "file");
        assert_eq!(file_name(""), "file");
        assert_eq!(file_name("/"), "file");
        assert_eq!(file_name("\u{202E}txt.exe"), "_txt.exe");
    }
}
