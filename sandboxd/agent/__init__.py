"""The in-sandbox agent (standard library only; runs inside the sandbox as its pid 1)."""
