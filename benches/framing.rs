//! Message framing throughput on a server→client stream shaped like a real
//! query result: RowDescription, many DataRows, CommandComplete, ReadyForQuery.
//!
//! `RelayState::scan` is crate-private, so the relay-style case replays what
//! it does per read: walk headers with `peek_total_len`, inspect only
//! ReadyForQuery/ParameterStatus, and pass an incomplete uninspected message
//! through by skipping its remaining bytes.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgrelay::protocol::backend::{self as be, TxStatus};
use pgrelay::protocol::framing::{self, Frame};
use std::hint::black_box;

/// Same bound the relay uses for server messages.
const MAX_SERVER_MESSAGE: usize = 1 << 30;
/// A typical socket read size.
const READ_SIZE: usize = 8 * 1024;

/// One result set of `rows` rows; `width` is the length of the free-text column.
fn result_stream(rows: usize, width: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    be::write_text_row_description(&["aid", "bid", "abalance", "filler", "updated"], &mut buf);
    let filler = "x".repeat(width);
    for i in 0..rows {
        let aid = i.to_string();
        let bid = (i % 10).to_string();
        let balance = (i as i64 * 37 - 5000).to_string();
        be::write_data_row(
            &[
                Some(&aid),
                Some(&bid),
                Some(&balance),
                Some(&filler),
                Some("2026-11-26 15:22:39.123456+00"),
            ],
            &mut buf,
        );
    }
    be::write_command_complete(&format!("SELECT {rows}"), &mut buf);
    be::write_parameter_status("TimeZone", "UTC", &mut buf);
    be::write_ready_for_query(TxStatus::Idle, &mut buf);
    buf
}

/// Whole-buffer walk with `framing::check`: message count.
fn count_messages(stream: &[u8]) -> usize {
    let mut pos = 0;
    let mut count = 0;
    while let Ok(Some(total)) = framing::check(&stream[pos..], MAX_SERVER_MESSAGE) {
        pos += total;
        count += 1;
    }
    assert_eq!(pos, stream.len(), "stream is made of whole messages");
    count
}

/// Relay-style scan over `READ_SIZE` reads; returns bytes forwarded and
/// the ReadyForQuery count so the work cannot be optimised away.
fn relay_like_scan(stream: &[u8]) -> (usize, usize) {
    let mut pending: Vec<u8> = Vec::with_capacity(READ_SIZE * 2);
    let mut skip = 0usize;
    let mut forwarded = 0usize;
    let mut ready = 0usize;
    for read in stream.chunks(READ_SIZE) {
        pending.extend_from_slice(read);
        let mut pos = skip.min(pending.len());
        skip -= pos;
        while pos < pending.len() {
            let rest = &pending[pos..];
            let Some(total) = framing::peek_total_len(rest, MAX_SERVER_MESSAGE).unwrap() else {
                break;
            };
            if rest.len() < total {
                if !matches!(
                    rest[0],
                    be::tag::READY_FOR_QUERY | be::tag::PARAMETER_STATUS
                ) {
                    skip = total - rest.len();
                    pos = pending.len();
                }
                break;
            }
            let frame = Frame::new(&rest[..total]);
            match frame.tag {
                be::tag::READY_FOR_QUERY => {
                    be::ready_for_query_status(frame.body).unwrap();
                    ready += 1;
                }
                be::tag::PARAMETER_STATUS => {
                    black_box(be::parameter_status(frame.body).unwrap());
                }
                _ => {}
            }
            pos += total;
        }
        forwarded += pos;
        pending.drain(..pos);
    }
    (forwarded, ready)
}

fn framing_benches(c: &mut Criterion) {
    // Narrow rows stress per-message overhead; wide rows stress pass-through.
    for (name, rows, width) in [("narrow_rows", 10_000, 84), ("wide_rows", 500, 4_000)] {
        let stream = result_stream(rows, width);
        assert_eq!(count_messages(&stream), rows + 4);
        assert_eq!(relay_like_scan(&stream), (stream.len(), 1));
        let mut group = c.benchmark_group(format!("framing/{name}"));
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function("check_whole_buffer", |b| {
            b.iter(|| count_messages(black_box(&stream)))
        });
        group.bench_function("relay_like_scan_8k_reads", |b| {
            b.iter(|| relay_like_scan(black_box(&stream)))
        });
        group.finish();
    }
}

criterion_group!(benches, framing_benches);
criterion_main!(benches);
