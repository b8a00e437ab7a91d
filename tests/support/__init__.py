"""What the tests share: helpers (``waiting``, ``commands``, ``forwarding``, ...) and the apps and
scripts the tests run. Test modules import from here, never from one another
(``tests/project/test_test_layout.py`` checks)."""
