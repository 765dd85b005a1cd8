"""Overhead of the backend layer (``xpmat._array``): namespace resolution + a 64x64 matmul vs raw NumPy."""

from xpmat._array import array_namespace, float_dtype

from .common import BACKENDS, gaussian, namespace, sync, to_device, warm_up


class BackendLayerOverhead:
    params = [BACKENDS]
    param_names = ["backend"]

    def setup(self, backend):
        self.xp, dev = namespace(backend)
        self.host = gaussian((64, 64)).astype("float32")
        self.a = to_device(self.host, self.xp, dev)
        self.b = to_device(self.host.T.copy(), self.xp, dev)
        warm_up(self, backend)

    def time_matmul_through_xpmat(self, backend):
        xp = array_namespace(self.a, self.b, names=("a", "b"))
        float_dtype(xp, self.a, self.b)
        sync(self.a @ self.b)

    def time_matmul_raw_anchor(self, backend):
        sync(self.a @ self.b)

    def time_raw_numpy_anchor(self, backend):
        self.host @ self.host.T
