import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and keeps timings steady on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
