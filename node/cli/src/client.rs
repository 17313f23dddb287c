//! The HTTP client of the local API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use cpns_api::{API_FILE, ApiFile, ErrorBody};

/// Why a CLI request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// No node answers for this data dir.
    #[error(
        "no node is running for data dir {dir} ({reason}); start one with `cpns-node --data-dir {dir}`"
    )]
    NotRunning {
        /// The data dir.
        dir: PathBuf,
        /// Why we think so.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{message} ({code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable code.
        code: String,
        /// Message.
        message: String,
    },
    /// Anything else (bad answer, local I/O).
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The stable code printed after the message: the API's code, `not_running`, or
    /// `failed`. `cpns-auth` prints its errors the same way.
    pub fn code(&self) -> &str {
        match self {
            CliError::NotRunning { .. } => "not_running",
            CliError::Api { code, .. } => code,
            CliError::Other(_) => "failed",
        }
    }

    /// The line printed on stderr: `cpns: MESSAGE (CODE)`.
    pub fn line(&self) -> String {
        match self {
            CliError::Api { .. } => format!("cpns: {self}"),
            _ => format!("cpns: {self} ({})", self.code()),
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotRunning { .. } => super::EXIT_NOT_RUNNING,
            CliError::Api { status: 400, .. } => super::EXIT_USAGE,
            _ => super::EXIT_FAILED,
        }
    }
}

/// Longest line taken from a streamed answer.
const MAX_LINE: usize = 1 << 20;

/// A client of one node's API, found through its data dir.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
    dir: PathBuf,
}

impl ApiClient {
    /// Reads `DATA_DIR/api.json`.
    pub fn from_data_dir(dir: &Path) -> Result<ApiClient, CliError> {
        let file = ApiFile::read(dir).map_err(|e| CliError::NotRunning {
            dir: dir.to_owned(),
            reason: format!("cannot read {}: {e}", API_FILE),
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .map_err(|e| CliError::Other(e.to_string()))?;
        Ok(ApiClient {
            http,
            base: format!("http://{}", file.addr),
            token: file.token,
            dir: dir.to_owned(),
        })
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, CliError> {
        let resp = self.start(req).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CliError::Other(format!("reading the answer: {e}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Other(format!("bad answer from the node: {e}")))
    }

    /// Sends `req` with the token; a node that does not answer is [`CliError::NotRunning`],
    /// an error status the API's error (its JSON body, or the text if it has none).
    async fn start(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| {
            if e.is_connect() {
                CliError::NotRunning {
                    dir: self.dir.clone(),
                    reason: format!("nothing answers at {}", self.base),
                }
            } else {
                CliError::Other(format!("request failed: {e}"))
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CliError::Other(format!("reading the answer: {e}")))?;
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => CliError::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
            },
            Err(_) => CliError::Api {
                status: status.as_u16(),
                code: "http".into(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            },
        })
    }

    /// GET a text resource.
    pub async fn get_text(&self, path: &str) -> Result<String, CliError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CliError::Other(format!("request failed: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
        if !status.is_success() {
            return Err(CliError::Api {
                status: status.as_u16(),
                code: "http".into(),
                message: text,
            });
        }
        Ok(text)
    }

    /// GET a newline-delimited stream, handing each line to `each` as it arrives. A line
    /// longer than [`MAX_LINE`] ends it with an error (the node's lines are small).
    pub async fn get_lines(
        &self,
        path: &str,
        mut each: impl FnMut(&[u8]) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        let mut resp = self
            .start(self.http.get(format!("{}{path}", self.base)))
            .await?;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| CliError::Other(format!("reading the answer: {e}")))?
        {
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                if !line.is_empty() {
                    each(line)?;
                }
            }
            if buf.len() > MAX_LINE {
                return Err(CliError::Other(format!(
                    "a line of the answer is over {MAX_LINE} bytes"
                )));
            }
        }
        if !buf.is_empty() {
            each(&buf)?;
        }
        Ok(())
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// POST a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// DELETE a resource.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }
}
