//! Reading the plan's TOML into the raw schema while finding every schema error.
//!
//! serde stops at the first error it meets, and it meets them in the order it walks the tables
//! (keys sorted by name), not in the file's order; the validator only runs once serde succeeds.
//! So that the error reported is the one that comes first in the file whichever phase finds it,
//! the document is parsed once into a tree with spans, and each schema error serde reports is
//! recorded and repaired in the tree, which is read again until it reads:
//!
//! - an unknown key is removed (the validator never sees unknown keys, so this is exact);
//! - a value of the wrong type is replaced by a placeholder of the expected type that the
//!   validator rejects in its turn (an integer far out of any range, a string of a NUL, ...),
//!   so checks that need that value skip it as they skip any rejected value;
//! - a missing key is added as such a placeholder.
//!
//! The validator then runs on the repaired tree. Its errors at a placeholder are echoes of the
//! schema error there and are dropped. Because a placeholder could still sway a check elsewhere
//! (a list replaced by an empty one), the repair is done twice with two different sets of
//! placeholders and a validator error counts only when both runs find it: it stands whatever
//! the unreadable value would have been.
//!
//! A TOML syntax error ends the reading there: schema errors above it still count (its tables
//! may be cut short, so a missing key does not), the validator does not run.

use super::raw::RawPlan;
use serde::Deserialize;
use std::borrow::Cow;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// Most repairs tried before giving up (a plan with more schema errors than this reports the
/// first of those found).
const MAX_REPAIRS: usize = 400;

/// Bytes of plan read again, summed over the repairs, before giving up: each repair reads the
/// whole tree again, so a huge plan full of errors gets fewer repairs (a 16 MiB one, 4).
const REPAIR_BUDGET_BYTES: usize = 64 << 20;

/// An error: the byte span it points at (`None`: the whole file), its message, and the byte
/// offset it is ordered by (the span's start, except for a missing key, which is ordered at the
/// end of its table: a key misspelt in the table is the first thing to say).
pub(super) type Located = (Option<Range<usize>>, String, usize);

/// What reading the schema found.
pub(super) struct Read {
    /// The schema errors, each where it is in the file.
    pub(super) errors: Vec<Located>,
    /// The raw plan read from the repaired tree, when the file was TOML and every schema error
    /// could be repaired; with the second set of placeholders too when any was used.
    pub(super) raws: Option<(RawPlan, Option<RawPlan>)>,
    /// The spans of the placeholders (values replaced or added), where validator errors are
    /// echoes of a schema error.
    pub(super) placeholders: Vec<Range<usize>>,
    /// Integers too large for the schema's 64 bits: their span, their text and the placeholder's
    /// text. The validator's range error there, with the placeholder's text replaced by the
    /// integer's, is the clearer message.
    pub(super) overflows: Vec<(Range<usize>, String, String)>,
    /// `version` as written, when it is an integer: the validator's version rule is applied to
    /// it before anything else, whatever else is wrong.
    pub(super) version: Option<Spanned<i64>>,
    /// The file has no `version` key.
    pub(super) version_missing: bool,
}

/// Reads `text` as a plan: its schema errors and, when they can all be repaired, the raw plan.
pub(super) fn read(text: &str) -> Read {
    let (tree, syntax) = DeTable::parse_recoverable(text);
    if let Some(first) = syntax.iter().filter_map(|e| e.span()).map(|s| s.start).min() {
        let mut read = Read {
            errors: syntax.iter().map(located).collect(),
            raws: None,
            placeholders: Vec::new(),
            overflows: Vec::new(),
            version: None,
            version_missing: false,
        };
        let (errors, _) = repair(tree, text, 0, false);
        read.errors
            .extend(errors.into_iter().filter(|(_, _, order)| *order < first));
        return read;
    }
    if !syntax.is_empty() {
        return Read {
            errors: syntax.iter().map(located).collect(),
            raws: None,
            placeholders: Vec::new(),
            overflows: Vec::new(),
            version: None,
            version_missing: false,
        };
    }
    let version_key = tree.get_ref().iter().find(|(k, _)| k.get_ref() == "version");
    let version_missing = version_key.is_none();
    let version = version_key.and_then(|(_, v)| {
        let i = v.get_ref().as_integer()?;
        let n = i64::from_str_radix(i.as_str(), i.radix()).ok()?;
        Some(Spanned::new(v.span(), n))
    });
    let (errors, first) = repair(tree.clone(), text, 0, true);
    let (raws, placeholders, overflows) = match first {
        // Nothing was replaced: the plan as written is what the validator checks.
        Some(a) if a.placeholders.is_empty() => (Some((a.raw, None)), a.placeholders, a.overflows),
        Some(a) => match repair(tree, text, 1, true).1 {
            Some(b) => (Some((a.raw, Some(b.raw))), a.placeholders, a.overflows),
            // Unreachable in practice (both sets repair the same errors); without a second
            // reading the validator's errors could not be told from a placeholder's doing.
            None => (None, Vec::new(), Vec::new()),
        },
        None => (None, Vec::new(), Vec::new()),
    };
    Read {
        errors,
        raws,
        placeholders,
        overflows,
        version,
        version_missing,
    }
}

/// A tree that read.
struct Repaired {
    raw: RawPlan,
    placeholders: Vec<Range<usize>>,
    overflows: Vec<(Range<usize>, String, String)>,
}

/// Reads `tree` as a [`RawPlan`], repairing each schema error; returns the errors found and the
/// plan once it reads. `variant` picks the placeholder set; `missing_counts`: whether a missing
/// key is an error (not when a syntax error may have cut the table short).
fn repair(
    mut tree: Spanned<DeTable<'_>>,
    text: &str,
    variant: usize,
    missing_counts: bool,
) -> (Vec<Located>, Option<Repaired>) {
    let mut errors: Vec<Located> = Vec::new();
    let mut placeholders: Vec<Range<usize>> = Vec::new();
    let mut overflows = Vec::new();
    // Keys added for missing fields get spans past the end of the text, one each, so an error
    // at them is recognised and never shown.
    // Table ends are measured in the tree as written, before keys are removed.
    let original = tree.clone();
    let len = text.len();
    let mut next_fake = len + 1;
    let repairs = MAX_REPAIRS.min(REPAIR_BUDGET_BYTES / len.max(1)).max(1);
    for _ in 0..repairs {
        let e = match RawPlan::deserialize(toml::de::Deserializer::from(tree.clone())) {
            Ok(raw) => {
                return (
                    errors,
                    Some(Repaired {
                        raw,
                        placeholders,
                        overflows,
                    }),
                );
            }
            Err(e) => e,
        };
        let message = e.message().to_string();
        let Some(span) = e.span() else {
            errors.push((None, message, 0));
            break;
        };
        let echo = span.start > len
            || placeholders
                .iter()
                .any(|p| p.start <= span.start && span.end <= p.end);
        let record = |errors: &mut Vec<Located>, order: usize| {
            if !echo {
                errors.push((Some(span.clone()), message.clone(), order));
            }
        };
        // Past 128 bits toml names no type at all.
        let too_large = message.starts_with("integer number overflowed");
        if message.starts_with("unknown field `") {
            record(&mut errors, span.start);
            if !remove_key(tree.get_mut(), &span) {
                break;
            }
        } else if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            if missing_counts {
                let end = table_end(&original, &span).unwrap_or(span.start);
                record(&mut errors, end);
            }
            let fake = next_fake..next_fake;
            next_fake += 1;
            // A string first; if another type is wanted, the next pass replaces it.
            let value = Spanned::new(fake.clone(), nul_string(variant));
            if !add_key(&mut tree, &span, field, value) {
                break;
            }
            placeholders.push(fake);
        } else if let Some(expected) = message
            .split_once(", expected ")
            .map(|(_, x)| x.to_string())
            .filter(|_| message.starts_with("invalid type") || message.starts_with("invalid value"))
            .or_else(|| too_large.then(|| "i64".to_string()))
        {
            record(&mut errors, span.start);
            let Some(node) = find_value(&mut tree, &span) else {
                break;
            };
            let Some(placeholder) = placeholder(&expected, variant, &span) else {
                break;
            };
            if let (DeValue::Integer(i), DeValue::Integer(_), true) = (
                node.get_ref(),
                &placeholder,
                too_large
                    || message.starts_with("invalid value: integer")
                    || message.starts_with("invalid type: integer"),
            ) {
                let literal = text.get(span.clone()).unwrap_or(i.as_str()).trim().to_string();
                let value = if literal.starts_with('-') {
                    i64::MIN
                } else {
                    i64::MAX
                };
                overflows.push((span.clone(), literal, value.to_string()));
                *node.get_mut() = integer(value);
            } else {
                *node.get_mut() = placeholder;
            }
            if !echo {
                placeholders.push(span);
            }
        } else {
            record(&mut errors, span.start);
            break;
        }
    }
    (errors, None)
}

/// A syntax error as [`Located`].
fn located(e: &toml::de::Error) -> Located {
    let order = e.span().map_or(0, |s| s.start);
    (e.span(), e.message().to_string(), order)
}

/// Where the table at `span` (the root when none has it) ends: the end of its last entry.
fn table_end(root: &Spanned<DeTable<'_>>, span: &Range<usize>) -> Option<usize> {
    fn find<'t, 'i>(
        value: &'t Spanned<DeValue<'i>>,
        span: &Range<usize>,
    ) -> Option<&'t Spanned<DeValue<'i>>> {
        if value.span() == *span {
            return Some(value);
        }
        match value.get_ref() {
            DeValue::Table(t) => t.values().find_map(|v| find(v, span)),
            DeValue::Array(a) => a.iter().find_map(|v| find(v, span)),
            _ => None,
        }
    }
    if root.span() == *span {
        return Some(end_of_table(root.get_ref()));
    }
    let node = root.get_ref().values().find_map(|v| find(v, span))?;
    Some(end_of_value(node).max(span.end))
}

/// Where the table holding the entry at byte `at` of plan `text` ends (the end of its last
/// entry), for the validator's error about a key missing from that table: ordered there, as a
/// missing key is, so that a key misspelt in the table is said first.
pub(super) fn table_end_around(text: &str, at: usize) -> Option<usize> {
    fn within(table: &DeTable<'_>, at: usize) -> Option<usize> {
        let (_, value) = table
            .iter()
            .find(|(k, v)| k.span().start <= at && at < k.span().end.max(end_of_value(v)))?;
        if let DeValue::Table(inner) = value.get_ref()
            && let Some(end) = within(inner, at)
        {
            return Some(end);
        }
        Some(end_of_table(table))
    }
    let (tree, _) = DeTable::parse_recoverable(text);
    within(tree.get_ref(), at)
}

/// Where the table whose value is at `span` in plan `text` ends (the end of its last entry),
/// for the validator's error about a key missing from that very table (`devices` without
/// `prefix`, a lifetime action without its trigger): ordered there, as [`repair`] orders a
/// missing key, so that a key misspelt in the table is said first.
pub(super) fn table_end_of(text: &str, span: &Range<usize>) -> Option<usize> {
    let (tree, _) = DeTable::parse_recoverable(text);
    table_end(&tree, span)
}

/// Where a value ends: for a table or an array, the end of its last entry.
fn end_of_value(value: &Spanned<DeValue<'_>>) -> usize {
    let inner = match value.get_ref() {
        DeValue::Table(t) => end_of_table(t),
        DeValue::Array(a) => a.iter().map(end_of_value).max().unwrap_or(0),
        _ => 0,
    };
    inner.max(value.span().end)
}

/// Where a table's last entry ends.
fn end_of_table(table: &DeTable<'_>) -> usize {
    table
        .iter()
        .map(|(k, v)| k.span().end.max(end_of_value(v)))
        .max()
        .unwrap_or(0)
}

/// A string no key accepts: a lone NUL (or SOH).
fn nul_string(variant: usize) -> DeValue<'static> {
    DeValue::String(Cow::Owned(
        if variant == 0 { "\u{0}" } else { "\u{1}" }.to_string(),
    ))
}

/// An integer placeholder.
fn integer(value: i64) -> DeValue<'static> {
    let text: &'static str = if value == i64::MAX {
        "9223372036854775807"
    } else {
        "-9223372036854775808"
    };
    DeValue::parse(text).expect("an i64 literal").into_inner()
}

/// The placeholder for a value serde wanted as `expected` (its message's words), or `None`
/// when the wanted type is not one the schema uses.
fn placeholder<'i>(expected: &str, variant: usize, span: &Range<usize>) -> Option<DeValue<'i>> {
    let is = |words: &[&str]| words.iter().any(|w| expected.contains(w));
    Some(if is(&["i64", "i32", "u64", "u32", "u16", "u8", "integer"]) {
        integer(if variant == 0 { i64::MIN } else { i64::MAX })
    } else if is(&["f64", "f32", "float", "number"]) {
        DeValue::parse("nan").expect("a float literal").into_inner()
    } else if is(&["a boolean"]) {
        DeValue::Boolean(variant == 1)
    } else if is(&["a string"]) {
        nul_string(variant)
    } else if is(&["a sequence"]) {
        let mut array = DeArray::new();
        if variant == 1 {
            array.push(Spanned::new(span.clone(), nul_string(variant)));
        }
        DeValue::Array(array)
    } else if is(&["struct ", "a map"]) {
        DeValue::Table(DeTable::new())
    } else {
        return None;
    })
}

/// Removes the key whose name is at `span`, wherever it is in the tree.
fn remove_key(table: &mut DeTable<'_>, span: &Range<usize>) -> bool {
    let name = table
        .keys()
        .find(|k| k.span() == *span)
        .map(|k| k.get_ref().to_string());
    if let Some(name) = name {
        // Keys are unique within a table, so the name is the key.
        return table.remove(name.as_str()).is_some();
    }
    table.iter_mut().any(|(_, v)| remove_in_value(v.get_mut(), span))
}

fn remove_in_value(value: &mut DeValue<'_>, span: &Range<usize>) -> bool {
    match value {
        DeValue::Table(t) => remove_key(t, span),
        DeValue::Array(a) => a.iter_mut().any(|v| remove_in_value(v.get_mut(), span)),
        _ => false,
    }
}

/// The value at exactly `span`, wherever it is in the tree.
fn find_value<'t, 'i>(
    root: &'t mut Spanned<DeTable<'i>>,
    span: &Range<usize>,
) -> Option<&'t mut Spanned<DeValue<'i>>> {
    fn in_table<'t, 'i>(
        table: &'t mut DeTable<'i>,
        span: &Range<usize>,
    ) -> Option<&'t mut Spanned<DeValue<'i>>> {
        table.iter_mut().find_map(|(_, v)| in_value(v, span))
    }
    fn in_value<'t, 'i>(
        value: &'t mut Spanned<DeValue<'i>>,
        span: &Range<usize>,
    ) -> Option<&'t mut Spanned<DeValue<'i>>> {
        if value.span() == *span {
            return Some(value);
        }
        match value.get_mut() {
            DeValue::Table(t) => in_table(t, span),
            DeValue::Array(a) => a.iter_mut().find_map(|v| in_value(v, span)),
            _ => None,
        }
    }
    in_table(root.get_mut(), span)
}

/// Adds `field = value` to the table at `span` (the root when no table has that span).
fn add_key<'i>(
    root: &mut Spanned<DeTable<'i>>,
    span: &Range<usize>,
    field: &str,
    value: Spanned<DeValue<'i>>,
) -> bool {
    let key = Spanned::new(value.span(), Cow::Owned(field.to_string()));
    let table = if root.span() == *span {
        root.get_mut()
    } else {
        match find_value(root, span).map(|node| node.get_mut()) {
            Some(DeValue::Table(t)) => t,
            _ => return false,
        }
    };
    table.insert(key, value);
    true
}
