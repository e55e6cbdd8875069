//! The kernel command line (`/chosen/bootargs`): how a host tells a test guest which test to run.
//!
//! Words are separated by whitespace, as on Linux; a word is either a flag (`quiet`) or
//! `key=value` (`tiny.test=unmapped`). Matching is by whole word, so `tiny.test=unmapped2` does
//! not select `unmapped`. Quoting is not supported: no test needs spaces in a value.

/// The value of the first `key=value` word whose key is `key`, if any.
pub fn value<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Whether `word` appears in `args` as a whole word.
pub fn has(args: &str, word: &str) -> bool {
    args.split_whitespace().any(|w| w == word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_finds_key_among_other_words() {
        let args = "console=ttyAMA0 tiny.test=unmapped  quiet";
        assert_eq!(value(args, "tiny.test"), Some("unmapped"));
        assert_eq!(value(args, "console"), Some("ttyAMA0"));
    }

    #[test]
    fn value_matches_whole_keys_only() {
        assert_eq!(value("xtiny.test=a tiny.testx=b", "tiny.test"), None);
        assert_eq!(value("", "tiny.test"), None);
        assert_eq!(value("tiny.test", "tiny.test"), None);
    }

    #[test]
    fn value_takes_the_first_occurrence_and_keeps_later_equals_signs() {
        assert_eq!(value("k=a=b k=c", "k"), Some("a=b"));
        assert_eq!(value("k=", "k"), Some(""));
    }

    #[test]
    fn has_matches_whole_words() {
        assert!(has("hello tiny.test=unmapped", "tiny.test=unmapped"));
        assert!(!has("tiny.test=unmapped2", "tiny.test=unmapped"));
        assert!(!has("", "hello"));
    }
}
