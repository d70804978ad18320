"""The student's side: the login shell and what it shows (it runs as the student)."""
