"""Operations: systemd notify, health and metrics endpoint, inference watchdog, JSON logs, soak."""
