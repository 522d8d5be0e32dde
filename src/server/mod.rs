//! The device side of the Mender server API (`docs/managed-mode.md`): authentication,
//! inventory, deployments, status and log reports, and the artifact
//! download with resume, and renewing its link.

pub mod backoff;
pub mod client;
pub mod deployment;
pub mod download;
pub mod link_refresh;
pub mod token;

pub use client::{ApiError, DeploymentInstruction, ServerClient, Status};
pub use download::{DownloadOptions, ResumableDownload};
