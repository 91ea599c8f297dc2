//! Hostile and broken peers (filled in by the peer-attack suite).
