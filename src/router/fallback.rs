//! Keyword-level analysis of a statement sqlparser could not parse. The route is
//! always the primary; this only recovers the session effects (transaction
//! control, pins) so that session state cannot silently diverge.

use std::sync::Arc;

use super::effect::{Effect, PinReason, TxControl};
use super::functions::{FunctionCatalog, FunctionClass};
use super::kind::StatementKind;
use super::lexer::Segment;

/// Kind and effects of an unparsed statement.
pub fn unparsed_effects(
    segment: &Segment,
    catalog: &FunctionCatalog,
) -> (StatementKind, Vec<Effect>) {
    let (first, second) = segment.leading_words();
    let first = first.unwrap_or_default();
    let kind = StatementKind::from_leading_words(&first, second.as_deref());
    let words: Vec<String> = segment.words().collect();
    let has_pair = |a: &str, b: &str| words.windows(2).any(|w| w[0] == a && w[1] == b);
    let second_is = |w: &str| second.as_deref() == Some(w);

    let mut effects = Vec::new();
    match first.as_str() {
        "BEGIN" | "START" => effects.push(Effect::Transaction(TxControl::Begin {
            read_only: has_pair("READ", "ONLY"),
        })),
        "COMMIT" | "END" if !second_is("PREPARED") => {
            effects.push(Effect::Transaction(TxControl::Commit))
        }
        "ROLLBACK" | "ABORT" if !second_is("PREPARED") => {
            let tx = if words.iter().any(|w| w == "TO") {
                TxControl::RollbackToSavepoint
            } else {
                TxControl::Rollback
            };
            effects.push(Effect::Transaction(tx));
        }
        "SAVEPOINT" => effects.push(Effect::Transaction(TxControl::Savepoint)),
        "RELEASE" => effects.push(Effect::Transaction(TxControl::ReleaseSavepoint)),
        "PREPARE" if second_is("TRANSACTION") => {
            effects.push(Effect::Transaction(TxControl::PrepareTransaction))
        }
        "PREPARE" => effects.push(Effect::PinSession(PinReason::PreparedStatement)),
        // SET LOCAL ends with the transaction; other SETs cannot be recorded, so pin.
        "SET" if !second_is("LOCAL") => {
            effects.push(Effect::PinSession(PinReason::UnparsedSessionCommand))
        }
        "RESET" => effects.push(Effect::PinSession(PinReason::UnparsedSessionCommand)),
        "LISTEN" => effects.push(Effect::PinSession(PinReason::Listen)),
        "DECLARE" if has_pair("WITH", "HOLD") => {
            effects.push(Effect::PinSession(PinReason::HoldCursor))
        }
        "DECLARE" => effects.push(Effect::PinTransaction(PinReason::Cursor)),
        _ => {}
    }
    let creates_temp = (first == "CREATE"
        && words
            .iter()
            .skip(1)
            .take(3)
            .any(|w| w == "TEMP" || w == "TEMPORARY"))
        || has_pair("INTO", "TEMP")
        || has_pair("INTO", "TEMPORARY");
    if creates_temp {
        effects.push(Effect::PinSession(PinReason::TempTable));
    }
    for name in segment.called_names() {
        if catalog.classify(&name) == FunctionClass::SessionPinning {
            effects.push(Effect::PinSession(PinReason::SessionFunction(Arc::from(
                name.as_str(),
            ))));
        }
    }
    (kind, effects)
}
