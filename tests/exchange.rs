//! End-to-end exchange tests (filled in by the exchange suite).
