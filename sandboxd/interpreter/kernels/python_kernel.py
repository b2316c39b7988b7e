"""ipykernel as sandboxd starts it, inside the sandbox (run with the sandbox's Python).

The one change: a deep send queue on the iopub socket. ZeroMQ's PUB socket drops messages
once 1000 wait to be sent, so a burst of prints on a busy machine (the host's reader not
scheduled for a moment) lost output, and sometimes the ``idle`` status that ends a run. The
host side queues deeply too (``sandboxd.interpreter.python_kernel``, which sets the depth of
both ends and passes it on the command line as ``--SandboxKernelApp.iopub_queue_messages``;
not in the environment, which stays readable in /proc/<pid>/environ after the process starts).
A run's output is capped on the host, so the queue is only as deep as one burst.

And stream messages of bounded size: ipykernel sends whatever a stream buffered in 0.2 s as
one message, so a fast flood made messages of tens of MiB, which the host (which bounds the
size of a message it accepts, and how many it holds) would refuse. ``SandboxOutStream`` sends
a message per STREAM_MESSAGE_CHARS instead.
"""

import sys

import zmq
from ipykernel.iostream import OutStream
from ipykernel.kernelapp import IPKernelApp
from traitlets import DottedObjectName, Integer

STREAM_MESSAGE_CHARS = 1 << 20


class SandboxOutStream(OutStream):
    def write(self, string):
        if not isinstance(string, str) or len(string) <= STREAM_MESSAGE_CHARS:
            written = super().write(string)
            if self._buffered() >= STREAM_MESSAGE_CHARS:
                self.flush()
            return written
        for start in range(0, len(string), STREAM_MESSAGE_CHARS):
            self.write(string[start : start + STREAM_MESSAGE_CHARS])
        return len(string)

    def _buffered(self):
        with self._buffer_lock:
            return sum(buffer.tell() for buffer in self._buffers.values())


class SandboxKernelApp(IPKernelApp):
    iopub_queue_messages = Integer(1000, help="ZeroMQ send queue of the iopub socket").tag(
        config=True
    )
    outstream_class = DottedObjectName(f"{__name__}.SandboxOutStream").tag(config=True)

    def _bind_socket(self, s, port):
        if s.getsockopt(zmq.TYPE) in (zmq.PUB, zmq.XPUB):
            # Before bind: ZeroMQ's pipes take the high-water mark when they are made.
            s.setsockopt(zmq.SNDHWM, self.iopub_queue_messages)
        return super()._bind_socket(s, port)


if __name__ == "__main__":
    # Run as a script, its directory leads sys.path; the user's imports must not see it.
    del sys.path[0]
    SandboxKernelApp.launch_instance()
