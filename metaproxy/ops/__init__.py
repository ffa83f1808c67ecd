"""Operations: metrics, health, the private web listener, logging and log-flood control."""
