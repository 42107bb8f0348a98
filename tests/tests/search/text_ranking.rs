//! BM25 text search over Qdrant Edge returns the true top hits when every
//! point shares one of the searched terms — the case the vendored
//! posting-list fix (vendor/README.md) changes. A search for two terms
//! skips runs of the longer posting list whose best possible score (each
//! entry's `max_next_weight`) cannot reach the current top hits, so a stale
//! `max_next_weight` would hide a better point. Checked: with the
//! propagation turned off in the vendored crate, this test fails.

use projectors::search::vectors::{Collection, Filter, Mode, Point, Query};
use projectors::search::Search;
use serde_json::{json, Map, Value};
use tests::TestDb;
use uuid::Uuid;

/// More than one of Edge's scoring batches (10,000 record ids): the search
/// prunes between batches, from the end of one to the next point holding the
/// other term (12,000 here), when nothing in that run can beat the top hits.
const POINTS: usize = 24_000;
/// Where "invoice" weighs most: inside the run the search considers skipping
/// after its first batch. A stale `max_next_weight` at 10,000 would skip them.
const STRONG: std::ops::Range<usize> = 10_500..11_500;

/// A text holding "invoice" `n` times among `filler` other words: its BM25
/// document weight for "invoice" rises with `n` and falls with the length.
/// Every 4,000th point and the last also hold the rare "zebra" (a search
/// prunes only while a second posting list has entries ahead).
fn text(n: usize, filler: usize, salt: usize) -> String {
    let mut words: Vec<String> = (0..filler).map(|w| format!("word{salt}x{w}")).collect();
    words.extend(std::iter::repeat_n("invoice".to_string(), n));
    if salt.is_multiple_of(4_000) || salt == POINTS - 1 {
        words.push("zebra".into());
    }
    words.join(" ")
}

fn payload(text: &str) -> Map<String, Value> {
    match json!({ "text": text }) {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_search_finds_the_best_points_of_a_term_every_point_has() {
    let db = TestDb::new().await;
    let mut settings = query_service::Config::local().search;
    settings.vector_dir = db.vector_dir().join("ranking");
    let search = Search::open(&settings).await.expect("open Qdrant Edge");
    let dense = search.embed_one("invoice").await.expect("embed");

    // Every point has "invoice", once, except the strong thousand, which
    // hold it two to five times; written in batches, as the projection
    // writes them.
    let ids: Vec<Uuid> = (0..POINTS).map(|_| Uuid::new_v4()).collect();
    let strength = |i: usize| if STRONG.contains(&i) { 2 + i % 4 } else { 1 };
    let mut texts: Vec<String> = (0..POINTS)
        .map(|i| text(strength(i), (i * 13) % 29, i))
        .collect();
    for chunk in ids.iter().zip(&texts).collect::<Vec<_>>().chunks(500) {
        let points = chunk
            .iter()
            .map(|(id, text)| Point {
                id: **id,
                dense: dense.clone(),
                sparse: search.sparse_document(text),
                payload: payload(text),
            })
            .collect();
        search
            .store
            .write_many(Collection::Tasks, points, vec![])
            .await
            .expect("write");
    }
    // Then some points of the first batch change text (their weights
    // change in place in the posting list).
    let mut changed = Vec::new();
    for i in (0..5_000).step_by(3) {
        texts[i] = text(1, (i * 5) % 31, i);
        changed.push(Point {
            id: ids[i],
            dense: dense.clone(),
            sparse: search.sparse_document(&texts[i]),
            payload: payload(&texts[i]),
        });
    }
    search
        .store
        .write_many(Collection::Tasks, changed, vec![])
        .await
        .expect("rewrite");

    // Expected scores, computed as Edge scores BM25: the query's weight
    // times the term's IDF over the store times the document's weight.
    let query = search.sparse_query("invoice zebra");
    assert_eq!(query.indices.len(), 2, "two terms in the query");
    let documents: Vec<_> = texts.iter().map(|t| search.sparse_document(t)).collect();
    let n = POINTS as f32;
    let idf: Vec<f32> = query
        .indices
        .iter()
        .map(|term| {
            let df = documents
                .iter()
                .filter(|d| d.indices.contains(term))
                .count() as f32;
            ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
        })
        .collect();
    let score_of = |doc: &projectors::search::vectors::Sparse| -> f32 {
        query
            .indices
            .iter()
            .zip(&query.values)
            .zip(&idf)
            .filter_map(|((term, q), idf)| {
                let at = doc.indices.iter().position(|i| i == term)?;
                Some(q * idf * doc.values[at])
            })
            .sum()
    };
    let scores: std::collections::HashMap<Uuid, f32> = ids
        .iter()
        .zip(&documents)
        .map(|(id, d)| (*id, score_of(d)))
        .collect();
    let mut expected: Vec<f32> = scores.values().copied().collect();
    expected.sort_by(|a, b| b.total_cmp(a));
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * a.abs().max(b.abs());

    // More hits than points with the rare term: the rest must be the points
    // where "invoice" weighs most, wherever they sit in its posting list.
    for limit in [5, 10, 25, 60] {
        let hits = search
            .store
            .search(
                Collection::Tasks,
                Query {
                    mode: Mode::Text,
                    dense: vec![],
                    sparse: query.clone(),
                    filter: Filter::default(),
                    limit,
                },
            )
            .await
            .expect("search");
        assert_eq!(hits.len(), limit);
        for h in &hits {
            assert!(
                close(h.score, scores[&h.id]),
                "Edge scored {} as {}, computed {}",
                h.id,
                h.score,
                scores[&h.id]
            );
        }
        for (rank, (h, best)) in hits.iter().zip(&expected).enumerate() {
            assert!(
                close(h.score, *best),
                "hit {rank} of {limit}: score {} where the best {} is {best}",
                h.score,
                rank + 1
            );
        }
    }
}
