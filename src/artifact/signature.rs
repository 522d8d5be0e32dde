//! Artifact signatures (placeholder, being written).
