//! Text → dense vector.
//!
//! [`HashEmbedder`] is the default: deterministic, no model download. It
//! hashes word unigrams, word bigrams and character n-grams (3–5, within
//! words) into a fixed number of signed buckets and L2-normalises, so texts
//! that share words *or word pieces* ("summarise" / "summary", "invoices" /
//! "invoice") end up close. It is not a language model: synonyms that share
//! no letters are not close. [`HttpEmbedder`] calls an Ollama (`/api/embed`)
//! or OpenAI-compatible (`/v1/embeddings`) endpoint for real models.
//!
//! The dimension is part of the collection's configuration: changing the
//! embedder means a rebuild of the vector projection.

use std::time::Duration;

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding endpoint: {0}")]
    Http(String),
    #[error("embedding endpoint answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("embedding endpoint returned an unexpected body: {0}")]
    Shape(String),
    #[error("embedder returned a vector of dimension {got}, expected {expected}")]
    Dimension { expected: usize, got: usize },
}

#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// Length of every vector this embedder returns.
    fn dimension(&self) -> usize;
    /// A short name recorded with the collection (`hash-384`, `ollama:nomic-embed-text`).
    fn name(&self) -> String;
    /// One vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// The built-in deterministic embedder (see the module docs).
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dimension: usize,
}

impl HashEmbedder {
    pub fn new(dimension: usize) -> Self {
        Self {
            dimension: dimension.max(8),
        }
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dimension];
        let words: Vec<String> = words(text);
        let mut add = |feature: &str, weight: f32| {
            let h = fnv1a(feature.as_bytes());
            let bucket = (h % self.dimension as u64) as usize;
            let sign = if (h >> 63) & 1 == 1 { -1.0 } else { 1.0 };
            v[bucket] += sign * weight;
        };
        for w in &words {
            add(&format!("w:{w}"), 1.0);
            let chars: Vec<char> = format!("<{w}>").chars().collect();
            for n in 3..=5 {
                if chars.len() < n {
                    continue;
                }
                for gram in chars.windows(n) {
                    let g: String = gram.iter().collect();
                    add(&format!("c:{g}"), 0.35);
                }
            }
        }
        for pair in words.windows(2) {
            add(&format!("b:{} {}", pair[0], pair[1]), 0.5);
        }
        normalise(&mut v);
        v
    }
}

#[async_trait::async_trait]
impl Embedder for HashEmbedder {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn name(&self) -> String {
        format!("hash-{}", self.dimension)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

/// Lower-cased alphanumeric words, stop words dropped.
fn words(text: &str) -> Vec<String> {
    const STOP: &[&str] = &[
        "a", "an", "and", "the", "of", "to", "in", "on", "for", "with", "by", "at", "from", "is",
        "are", "be", "it", "this", "that", "as", "or", "into", "its", "our", "all",
    ];
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .filter(|w| !STOP.contains(&w.as_str()))
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Which wire protocol an [`HttpEmbedder`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFlavour {
    /// `POST {url}/api/embed` `{model, input: [..]}` → `{embeddings: [[..]]}`.
    Ollama,
    /// `POST {url}/v1/embeddings` `{model, input: [..]}` → `{data: [{embedding, index}]}`.
    OpenAi,
}

/// An embeddings endpoint, called in batches with a timeout and retries.
#[derive(Debug, Clone)]
pub struct HttpEmbedder {
    client: reqwest::Client,
    flavour: HttpFlavour,
    url: String,
    model: String,
    api_key: Option<String>,
    dimension: usize,
    batch_size: usize,
    max_attempts: u32,
}

impl HttpEmbedder {
    pub fn new(
        flavour: HttpFlavour,
        url: &str,
        model: &str,
        api_key: Option<String>,
        dimension: usize,
        timeout: Duration,
    ) -> Result<Self, EmbedError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| EmbedError::Http(e.to_string()))?;
        Ok(Self {
            client,
            flavour,
            url: url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key,
            dimension,
            batch_size: 32,
            max_attempts: 3,
        })
    }

    async fn call(&self, batch: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (path, body) = match self.flavour {
            HttpFlavour::Ollama => ("/api/embed", json!({"model": self.model, "input": batch})),
            HttpFlavour::OpenAi => (
                "/v1/embeddings",
                json!({"model": self.model, "input": batch}),
            ),
        };
        let mut request = self.client.post(format!("{}{path}", self.url)).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| EmbedError::Http(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(EmbedError::Status {
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        let value: Value = response
            .json()
            .await
            .map_err(|e| EmbedError::Shape(e.to_string()))?;
        let vectors = parse_response(self.flavour, &value, batch.len())?;
        for v in &vectors {
            if v.len() != self.dimension {
                return Err(EmbedError::Dimension {
                    expected: self.dimension,
                    got: v.len(),
                });
            }
        }
        Ok(vectors)
    }
}

/// Reads the vectors out of an endpoint's answer, in input order.
pub fn parse_response(
    flavour: HttpFlavour,
    value: &Value,
    expected: usize,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let to_vec = |v: &Value| -> Result<Vec<f32>, EmbedError> {
        v.as_array()
            .ok_or_else(|| EmbedError::Shape("an embedding is not an array".into()))?
            .iter()
            .map(|x| {
                x.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| EmbedError::Shape("an embedding holds a non-number".into()))
            })
            .collect()
    };
    let vectors: Vec<Vec<f32>> = match flavour {
        HttpFlavour::Ollama => value
            .get("embeddings")
            .and_then(Value::as_array)
            .ok_or_else(|| EmbedError::Shape("no `embeddings` array".into()))?
            .iter()
            .map(to_vec)
            .collect::<Result<_, _>>()?,
        HttpFlavour::OpenAi => {
            let data = value
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| EmbedError::Shape("no `data` array".into()))?;
            let mut indexed = data
                .iter()
                .map(|d| {
                    let index = d.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let v = to_vec(d.get("embedding").unwrap_or(&Value::Null))?;
                    Ok((index, v))
                })
                .collect::<Result<Vec<_>, EmbedError>>()?;
            indexed.sort_by_key(|(i, _)| *i);
            indexed.into_iter().map(|(_, v)| v).collect()
        }
    };
    if vectors.len() != expected {
        return Err(EmbedError::Shape(format!(
            "{} embeddings for {expected} inputs",
            vectors.len()
        )));
    }
    Ok(vectors)
}

#[async_trait::async_trait]
impl Embedder for HttpEmbedder {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn name(&self) -> String {
        let flavour = match self.flavour {
            HttpFlavour::Ollama => "ollama",
            HttpFlavour::OpenAi => "openai",
        };
        format!("{flavour}:{}", self.model)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            let mut attempt = 0;
            let mut backoff = Duration::from_millis(200);
            loop {
                attempt += 1;
                match self.call(batch).await {
                    Ok(vectors) => {
                        out.extend(vectors);
                        break;
                    }
                    // A wrong shape or dimension will not fix itself.
                    Err(e @ (EmbedError::Dimension { .. } | EmbedError::Shape(_))) => {
                        return Err(e)
                    }
                    Err(e) if attempt >= self.max_attempts => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "embedding call failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn hash_embedder_is_deterministic_normalised_and_fixed_size() {
        let e = HashEmbedder::new(384);
        let a = e.embed_one("Summarise the quarterly sales report");
        assert_eq!(a.len(), 384);
        assert_eq!(a, e.embed_one("Summarise the quarterly sales report"));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        assert_eq!(e.embed_one("").iter().filter(|x| **x != 0.0).count(), 0);
    }

    #[test]
    fn shared_word_pieces_are_closer_than_unrelated_text() {
        let e = HashEmbedder::new(384);
        let doc = e.embed_one("Summarise the quarterly sales report for the board");
        let para = e.embed_one("summary of board sales reports per quarter");
        let other = e.embed_one("resize product photos to thumbnails");
        assert!(cosine(&doc, &para) > cosine(&doc, &other) + 0.2);
    }

    #[test]
    fn endpoint_answers_are_parsed_in_order_and_checked() {
        let ollama = json!({"embeddings": [[1.0, 0.0], [0.0, 1.0]]});
        let v = parse_response(HttpFlavour::Ollama, &ollama, 2).unwrap();
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        let openai = json!({"data": [
            {"index": 1, "embedding": [0.0, 1.0]},
            {"index": 0, "embedding": [1.0, 0.0]}
        ]});
        let v = parse_response(HttpFlavour::OpenAi, &openai, 2).unwrap();
        assert_eq!(v[0], vec![1.0, 0.0]);
        assert!(parse_response(HttpFlavour::Ollama, &ollama, 3).is_err());
        assert!(parse_response(HttpFlavour::OpenAi, &json!({"x": 1}), 1).is_err());
        let bad = json!({"embeddings": [["a"]]});
        assert!(parse_response(HttpFlavour::Ollama, &bad, 1).is_err());
    }

    /// A stand-in for an Ollama server (none runs here): fails its first
    /// call, then answers `dim`-long vectors; counts the calls.
    async fn fake_ollama(dim: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = axum::Router::new().route(
            "/api/embed",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let counter = counter.clone();
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                    }
                    let n = body["input"].as_array().map_or(0, Vec::len);
                    Ok(axum::Json(
                        json!({"embeddings": vec![vec![0.25f32; dim]; n]}),
                    ))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    #[tokio::test]
    async fn the_http_embedder_batches_and_retries() {
        let (url, calls) = fake_ollama(4).await;
        let e = HttpEmbedder::new(
            HttpFlavour::Ollama,
            &url,
            "m",
            None,
            4,
            Duration::from_secs(2),
        )
        .unwrap();
        let texts: Vec<String> = (0..40).map(|i| format!("text {i}")).collect();
        let vectors = e.embed(&texts).await.unwrap();
        assert_eq!(vectors.len(), 40);
        assert!(vectors.iter().all(|v| v.len() == 4));
        // One failed call, retried, then batches of 32 and 8.
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(e.name(), "ollama:m");
    }

    #[tokio::test]
    async fn a_wrong_dimension_from_the_endpoint_is_an_error_not_retried() {
        let (url, calls) = fake_ollama(5).await;
        let e = HttpEmbedder::new(
            HttpFlavour::Ollama,
            &url,
            "m",
            None,
            4,
            Duration::from_secs(2),
        )
        .unwrap();
        // The first call fails (503) and is retried; the second answers dimension 5.
        let err = e.embed(&["x".to_string()]).await.unwrap_err();
        assert!(
            matches!(
                err,
                EmbedError::Dimension {
                    expected: 4,
                    got: 5
                }
            ),
            "{err}"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
