"""ipykernel as sandboxd starts it, inside the sandbox (run with the sandbox's Python).

The one change: a deep send queue on the iopub socket. ZeroMQ's PUB socket drops messages
once 1000 wait to be sent, so a burst of prints on a busy machine (the host's reader not
scheduled for a moment) lost output, and sometimes the ``idle`` status that ends a run. The
host side queues deeply too (``sandboxd.interpreter.python_kernel``, which sets the depth of
both ends and passes it on the command line as ``--SandboxKernelApp.iopub_queue_messages``;
not in the environment, which stays readable in /proc/<pid>/environ after the process starts).
A run's output is capped on the host, so the queue is only as deep as one burst.
"""

import sys

import zmq
from ipykernel.kernelapp import IPKernelApp
from traitlets import Integer


class SandboxKernelApp(IPKernelApp):
    iopub_queue_messages = Integer(1000, help="ZeroMQ send queue of the iopub socket").tag(
        config=True
    )

    def _bind_socket(self, s, port):
        if s.getsockopt(zmq.TYPE) in (zmq.PUB, zmq.XPUB):
            # Before bind: ZeroMQ's pipes take the high-water mark when they are made.
            s.setsockopt(zmq.SNDHWM, self.iopub_queue_messages)
        return super()._bind_socket(s, port)


if __name__ == "__main__":
    # Run as a script, its directory leads sys.path; the user's imports must not see it.
    del sys.path[0]
    SandboxKernelApp.launch_instance()
