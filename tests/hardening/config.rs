//! Hardening: config (filled in by the change that adds its cases).
