"""Evaluation of teachers and students: pure logic."""
