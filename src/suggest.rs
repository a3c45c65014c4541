//! "Did you mean" hints for misspelt names (facts, codes, helpers, sections).

/// The closest candidate to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_close_names_only() {
        assert_eq!(super::did_you_mean("working_day_after", ["working_days_after", "months_after"]), Some("working_days_after"));
        assert_eq!(super::did_you_mean("zzz", ["working_days_after"]), None);
    }
}
