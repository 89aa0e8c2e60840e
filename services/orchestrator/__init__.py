"""The orchestrator: select -> answer -> critique -> refine, streamed, persisted and resumable."""
