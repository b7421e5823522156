"""The model repository shipped with radpair (Triton's layout; data only, found as package data)."""
