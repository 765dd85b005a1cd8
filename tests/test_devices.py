"""Any device: results stay on the inputs' device, and mixed devices are refused by name.

array-api-strict's ``Device("device1")`` is a second "device" that exists for this: a
creation call that forgets ``device=`` lands on the default device and is caught.  (The whole
suite also runs on it: the ``array_api_strict:device1`` column of the ``xp`` matrix.)
"""

from __future__ import annotations

import pytest
from conftest import require_backend
from primitive_calls import CALLS

xps = require_backend("array_api_strict:device1").xp
CPU, DEVICE1 = xps.Device("CPU_DEVICE"), xps.Device("device1")


def _arrays(out):
    if isinstance(out, tuple):
        return [a for x in out for a in _arrays(x)]
    return [out] if hasattr(out, "__array_namespace__") else []


@pytest.mark.parametrize("case", list(CALLS))
def test_every_result_on_the_input_device(case):
    call = CALLS[case]
    out = _arrays(call.fn(*(xps.asarray(a, device=DEVICE1) for a in call.args)))
    assert out and all(a.device == DEVICE1 for a in out), [a.device for a in out]


_MIXED = [pytest.param(case, i, id=f"{case}-arg{i}")
          for case, call in CALLS.items() for i in range(1, len(call.args))]


@pytest.mark.parametrize(("case", "moved"), _MIXED)
def test_mixed_devices_name_both_arguments(case, moved):
    call = CALLS[case]
    args = [xps.asarray(a, device=DEVICE1 if i == moved else CPU) for i, a in enumerate(call.args)]
    with pytest.raises(TypeError, match=r"different devices: `[^`]+` is on .*CPU_DEVICE.* but "
                                        r"`[^`]+` is on .*device1"):
        call.fn(*args)
