"""The teams: heroes' teams, the SQLModel tutorial's second resource."""
