"""ipykernel as sandboxd starts it, inside the sandbox (run with the sandbox's Python).

Three changes to a stock kernel:

* A deep send queue on the iopub socket. ZeroMQ's PUB socket drops messages once 1000 wait to
  be sent, so a burst of prints on a busy machine (the host's reader not scheduled for a
  moment) lost output, and sometimes the ``idle`` status that ends a run. The host side queues
  deeply too (``sandboxd.interpreter.python_kernel``, which sets the depth of both ends and
  passes it on the command line as ``--SandboxKernelApp.iopub_queue_messages``; not in the
  environment, which stays readable in /proc/<pid>/environ after the process starts). A run's
  output is capped on the host, so the queue is only as deep as one burst.
* Stream messages of bounded size: ipykernel sends whatever a stream buffered in 0.2 s as one
  message, so a fast flood made messages of tens of MiB, which the host (which bounds the size
  of a message it accepts, and how many it holds) would refuse. ``SandboxOutStream`` sends a
  message per STREAM_MESSAGE_CHARS instead.
* The rich results E2B's code-interpreter template gives, registered once the shell exists
  (``register_rich_results``): chart data of a matplotlib figure (MIME ``e2b/chart``, built by
  the ``e2b-charts`` package), a DataFrame's columns (``e2b/data``), plain lists and dicts as
  JSON, and PIL images displayed by ``Image.show()`` and ``Image.save(path)``. Nothing heavy is
  imported until the user's code imports it; a template without one of these packages simply
  goes without that result.
* Messages that carry lone surrogates (``print("\\ud800")``, a decoded file name, an
  exception's message) are packed as ASCII JSON (``\\ud800``). jupyter_client's packer fails
  on U+D800..U+DC7F (the kernel lost that output, and all else in the same flush) and turns
  U+DC80..U+DCFF into raw bytes (surrogateescape), which make the message invalid UTF-8: the
  host could not read it, and ``raise ValueError("\\udc80")`` ended as a success with no error.
* Bytes written to file descriptors 1 and 2 (a subprocess, ``os.write``) are decoded as UTF-8
  across reads, and a byte that is not UTF-8 becomes the lone surrogate U+DC00+byte (Python's
  ``surrogateescape``, PEP 383), so ``text.encode("utf-8", "surrogateescape")`` gives back
  exactly what was written. ipykernel decodes each 1000-byte read on its own with "replace":
  binary output became U+FFFD, and so did a character cut by a read's border.
"""

import codecs
import json
import os
import sys

import zmq
from ipykernel.iostream import OutStream
from ipykernel.kernelapp import IPKernelApp
from jupyter_client.jsonutil import json_clean, json_default
from traitlets import DottedObjectName, Integer

STREAM_MESSAGE_CHARS = 1 << 20
FD_READ_BYTES = 64 << 10


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

    def _watch_pipe_fd(self):
        # Replaces ipykernel's reader of the pipe that fds 1 and 2 are redirected into (see
        # the module's docstring): the same loop, with an incremental, lossless decoder.
        if self._fid is None:
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        try:
            data = os.read(self._fid, FD_READ_BYTES)
            while data and self._should_watch:
                text = decoder.decode(data)
                if text:
                    self.write(text)
                os.write(self._original_stdstream_copy, data)
                data = os.read(self._fid, FD_READ_BYTES)
            rest = decoder.decode(b"", final=True)
            if rest:
                self.write(rest)
        except Exception:
            self._exc = sys.exc_info()


CHART_MIME = "e2b/chart"
DATA_MIME = "e2b/data"


def dataframe_data(frame):
    """A DataFrame as ``{column: [values]}``, timestamps as ISO 8601 (what E2B sends)."""
    columns = frame.to_dict(orient="list")
    return {
        str(name): [v.isoformat() if hasattr(v, "isoformat") else v for v in values]
        for name, values in columns.items()
    }


def figure_chart(figure):
    """The chart a figure draws, as e2b-charts describes it; None when it cannot tell."""
    try:
        from e2b_charts import chart_figure_to_dict
    except ImportError:
        return None
    try:
        return chart_figure_to_dict(figure)
    except Exception:
        return None


def plain_json(value):
    """Lists and dicts that JSON can carry (numpy values included), else None."""
    try:
        import orjson
    except ImportError:
        return None
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return None
    return orjson.loads(encoded)


def register_rich_results(shell):
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    class ChartFormatter(BaseFormatter):
        """Figures are recognised here rather than registered by type: matplotlib's inline
        backend removes every formatter's Figure printer when it is activated."""

        format_type = Unicode(CHART_MIME)
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict,)

        def __call__(self, obj):
            figure_module = sys.modules.get("matplotlib.figure")
            if figure_module is not None and isinstance(obj, figure_module.Figure):
                return figure_chart(obj)
            return super().__call__(obj)

    class DataFormatter(BaseFormatter):
        format_type = Unicode(DATA_MIME)
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict,)

    formatters = shell.display_formatter.formatters
    formatters[CHART_MIME] = ChartFormatter(parent=shell.display_formatter)
    data = formatters[DATA_MIME] = DataFormatter(parent=shell.display_formatter)
    # pandas 3 names its classes by the public module, older ones by the defining module
    for module in ("pandas", "pandas.core.frame"):
        data.for_type_by_name(module, "DataFrame", dataframe_data)
    json_formatter = formatters["application/json"]
    json_formatter.for_type(list, plain_json)
    json_formatter.for_type(dict, plain_json)
    _display_pil_images()


def _display_pil_images():
    """``Image.show()`` displays the image (a sandbox has no viewer to start) and
    ``Image.save(path)`` displays it too, as in E2B's template."""
    try:
        from PIL import Image, ImageShow
    except ImportError:
        return
    from IPython.display import display

    original_save = Image.Image.save

    def save(self, fp, format=None, **params):
        if isinstance(fp, str):
            display(self)
        return original_save(self, fp, format, **params)

    def show(self, title=None):
        display(self)

    Image.Image.save = save
    Image.Image.show = show
    ImageShow._viewers.clear()  # nothing else may try to open a window


def lossless_packer(obj):
    """JSON as strict UTF-8, or ASCII JSON (a lone surrogate escaped as ``\\udc80``) when the
    message holds one; the host's json.loads reads either back to the same text. What JSON
    cannot hold (NaN, a set) is cleaned first, as jupyter_client's packer does."""
    try:
        text = _dumps(obj)
    except (TypeError, ValueError):
        obj = json_clean(obj)
        text = _dumps(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _dumps(obj, ensure_ascii=True).encode("ascii")


def _dumps(obj, ensure_ascii=False):
    return json.dumps(obj, default=json_default, ensure_ascii=ensure_ascii, allow_nan=False)


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

    def init_sockets(self):
        # Before any socket, and so before anything is sent: every sender shares this session.
        self.session.pack = lossless_packer
        super().init_sockets()

    def init_code(self):
        super().init_code()
        register_rich_results(self.shell)


if __name__ == "__main__":
    # Run as a script, its directory leads sys.path; the user's imports must not see it.
    del sys.path[0]
    SandboxKernelApp.launch_instance()
