//! Hardening: compression (filled in by the change that adds its cases).
