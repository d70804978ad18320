"""The student's side: the login shell, run as the student; it reaches root only through the helper."""
