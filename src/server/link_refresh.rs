//! A new download link for a deployment in progress. Links expire (24 h by
//! default on Mender's servers); an adaptive install that fetches frames
//! over a long time, or a download resumed much later, meets a 403. Asking
//! `deployments/next` again with the same provides gives the same
//! deployment with a fresh link (docs/artifacts.md, "Adaptive installs").
//!
//! The download owns this closure for its whole life, so it carries its own
//! copy of what it needs (agent, server, token, provides) rather than a
//! borrow of the daemon's client; a token that expired meanwhile makes the
//! refresh fail, and the download with it, as it would have without.

use std::io::Read;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use super::client::{NEXT_V1_PATH, ServerClient};
use super::deployment::DeploymentInstruction;
use super::download::RefreshLink;
use crate::artifact::header::Provides;

/// The answer to `next` is a few hundred bytes; the same cap as the API's.
const MAX_ANSWER: u64 = 1 << 20;
const DEADLINE: Duration = Duration::from_secs(120);

/// A refresher for deployment `id`, or None without a token.
pub fn refresher(
    client: &ServerClient,
    id: &str,
    provides: &Provides,
    device_type: &str,
) -> Option<RefreshLink> {
    let (jwt, server) = client.token()?;
    let url = format!("{server}{NEXT_V1_PATH}");
    let bearer = format!("Bearer {jwt}");
    let agent = client.agent().clone();
    let id = id.to_string();
    let mut body = provides.clone();
    body.remove("device_type");
    body.insert("device_type".into(), device_type.into());
    let body = serde_json::to_vec(&body).ok()?;
    Some(Box::new(move || -> Result<String> {
        let response = agent
            .post(&url)
            .config()
            .timeout_global(Some(DEADLINE))
            .http_status_as_error(false)
            .build()
            .header("Authorization", &bearer)
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(|e| anyhow!("deployments/next: {e}"))?;
        let status = response.status().as_u16();
        if status == 204 {
            bail!("the server has no deployment for this device any more");
        }
        if status != 200 {
            bail!("deployments/next: HTTP {status}");
        }
        let mut answer = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(MAX_ANSWER + 1)
            .read_to_end(&mut answer)?;
        if answer.len() as u64 > MAX_ANSWER {
            bail!("deployments/next: the answer is larger than {MAX_ANSWER} bytes");
        }
        let d = DeploymentInstruction::parse(&answer)
            .map_err(|(_, why)| anyhow!("deployments/next: {why}"))?;
        if d.id != id {
            bail!("the server now offers deployment {} instead of {id}", d.id);
        }
        log::info!("deployment {id}: the server gave a new download link");
        Ok(d.uri)
    }))
}
