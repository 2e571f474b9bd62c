"""The agent SDK: what every agent shares, starting with its manifest (:mod:`.manifest`)."""
