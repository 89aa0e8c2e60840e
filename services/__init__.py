"""The four gRPC services of OrchestrateX: selector, providers, orchestrator, analytics."""
