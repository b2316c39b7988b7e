"""ipykernel as sandboxd starts it, inside the sandbox (run with the sandbox's Python).

The one change: a deep send queue on the iopub socket. ZeroMQ's PUB socket drops messages
once 1000 wait to be sent, so a burst of prints on a busy machine (the host's reader not
scheduled for a moment) lost output, and sometimes the ``idle`` status that ends a run. The
host side queues deeply too (``sandboxd.interpreter.python_kernel``, which sets the depth of
both ends and hands it over in SANDBOXD_IOPUB_QUEUE_MESSAGES); a run's output is capped there,
so the queue is only as deep as one burst.
"""

import os
import sys

import zmq
from ipykernel.kernelapp import IPKernelApp

# Taken out of the environment before any user code runs.
IOPUB_QUEUE_MESSAGES = int(os.environ.pop("SANDBOXD_IOPUB_QUEUE_MESSAGES", "1000"))


class SandboxKernelApp(IPKernelApp):
    def _bind_socket(self, s, port):
        if s.getsockopt(zmq.TYPE) in (zmq.PUB, zmq.XPUB):
            s.setsockopt(zmq.SNDHWM, IOPUB_QUEUE_MESSAGES)  # before bind: pipes take it then
        return super()._bind_socket(s, port)


if __name__ == "__main__":
    # Run as a script, its directory leads sys.path; the user's imports must not see it.
    del sys.path[0]
    SandboxKernelApp.launch_instance()
