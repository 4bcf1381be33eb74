"""Trainers as the gateway sees them: their registry and heartbeats (registry), the
credentials it gives them (credentials), the channel it calls them on (channel), the
files they read under a claim (files), and the checks of everything they send
(checks: a trainer is trusted no more than a client)."""
