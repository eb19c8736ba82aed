"""What the SnapStart tests share: the secret's two values and the moved-clock precondition."""

from __future__ import annotations

import pytest

from tools.emulator.emulator import libfaketime

#: The secret's value while INIT runs (and so in the snapshot), and after its rotation.
BEFORE = "value-in-the-snapshot"
AFTER = "rotated-while-snapshotted"
#: How long the snapshot was stored before the restore (wall clock).
STORED_SECONDS = 2 * 3600.0

needs_libfaketime = pytest.mark.skipif(
    libfaketime() is None,
    reason="libfaketime is not installed (Debian package libfaketime; .ci/run installs it): "
    "the restore's wall-clock jump cannot be simulated",
)
