import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and keeps timings steady on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def kernel_calls(monkeypatch):
    """``spy(module, name, device_check=module)``: wraps ``module.name`` (a kernel
    dispatcher) so the returned list records, per call, whether the kernel ran
    (a non-None result); without CUDA, ``device_check.on_device`` accepts the
    CPU so the kernels run under the Triton interpreter."""
    def spy(module, name, device_check=None):
        calls = []
        real = getattr(module, name)

        def counted(*a, **kw):
            out = real(*a, **kw)
            calls.append(out is not None)
            return out

        monkeypatch.setattr(module, name, counted)
        if not torch.cuda.is_available():
            monkeypatch.setattr(device_check or module, "on_device", lambda *t: True)
        return calls
    return spy
