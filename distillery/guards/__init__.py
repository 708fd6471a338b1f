"""Guards on what goes into training (pure logic): identity leaks, benchmark contamination,
repetition. The guard stage (distillery/stages/guard.py) runs them after generation."""
