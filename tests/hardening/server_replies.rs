//! Hardening: server_replies (filled in by the change that adds its cases).
