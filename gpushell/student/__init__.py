"""The student's side: the login shell and what it shows, run as the student; root only through the helper."""
