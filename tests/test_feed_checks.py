"""Feed checks the per-backend cases of test_input_validation.py leave out, on the runners' shared
check itself: an input the model does not have, next to all those it does."""
import numpy as np
import pytest

from model.backends.base import InputError, check_feed
from tests import tiny_models


def test_an_extra_input_is_refused_by_name():
    feed = {**tiny_models.SPEC.sample(2), "mask": np.ones((2, 4), np.float32)}
    with pytest.raises(InputError, match=r"^feed names \['input', 'mask'\] do not match the model's inputs "
                                         r"\['input'\]; unexpected \['mask'\]$"):
        check_feed(feed, tiny_models.SPEC.input_metadata())
