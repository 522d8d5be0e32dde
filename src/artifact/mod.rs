//! The Mender Artifact format: streaming reader, writer and signatures.

pub mod signature;
