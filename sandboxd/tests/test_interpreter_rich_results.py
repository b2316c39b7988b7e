"""E2B's rich results, default contexts and kill-during-run through the real SDK (sync and
async) against a real sandboxd: chart data from the e2b-charts formatter, DataFrame data,
JSON, PIL images shown and saved."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator

import pytest
from e2b import TimeoutException
from e2b_code_interpreter import AsyncSandbox, Sandbox
from e2b_code_interpreter.charts import ChartType

from sandboxd.testing import RunningSandboxd

pytestmark = pytest.mark.sandboxd

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sbx(sandboxd: RunningSandboxd) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    try:
        yield sandbox
    finally:
        sandbox.kill()


def _chart(sbx: Sandbox, plotting: str):  # type: ignore[no-untyped-def]
    execution = sbx.run_code("import matplotlib.pyplot as plt\n" + plotting + "\nplt.show()")
    assert execution.error is None, execution.error
    charts = [r.chart for r in execution.results if r.chart is not None]
    assert len(charts) == 1, execution.results
    # the PNG still comes with it
    assert base64.b64decode(execution.results[0].png).startswith(PNG_MAGIC)
    return charts[0]


def test_a_line_plot_comes_back_as_a_line_chart_with_its_points(sbx: Sandbox) -> None:
    chart = _chart(
        sbx,
        "plt.plot([1, 2, 3], [2, 4, 8], label='doubling')\nplt.title('growth')\n"
        "plt.xlabel('step')\nplt.ylabel('value')",
    )
    assert chart.type == ChartType.LINE
    assert (chart.title, chart.x_label, chart.y_label) == ("growth", "step", "value")
    [line] = chart.elements
    assert line.label == "doubling"
    assert [(float(x), float(y)) for x, y in line.points] == [(1, 2), (2, 4), (3, 8)]


def test_bar_scatter_pie_and_box_plots_each_have_their_type_and_elements(sbx: Sandbox) -> None:
    bar = _chart(sbx, "plt.bar(['a', 'b', 'c'], [3, 1, 2])")
    assert bar.type == ChartType.BAR
    assert [(e.label, e.value) for e in bar.elements] == [("a", 3), ("b", 1), ("c", 2)]

    scatter = _chart(sbx, "plt.scatter([1, 2], [3, 4], label='pts')")
    assert scatter.type == ChartType.SCATTER
    assert [[(float(x), float(y)) for x, y in e.points] for e in scatter.elements] == [
        [(1, 3), (2, 4)]
    ]

    pie = _chart(sbx, "plt.pie([1, 3], labels=['one', 'three'])")
    assert pie.type == ChartType.PIE
    assert [e.label for e in pie.elements] == ["one", "three"]
    assert [round(e.angle) for e in pie.elements] == [90, 270]

    box = _chart(
        sbx,
        "plt.boxplot([[1, 2, 3, 4, 5], [2, 4, 6, 8, 10]], tick_labels=['x', 'y'], "
        "patch_artist=True)",
    )
    assert box.type == ChartType.BOX_AND_WHISKER
    assert [(e.label, e.median) for e in box.elements] == [("x", 3), ("y", 6)]


def test_a_figure_with_several_axes_is_a_superchart_of_its_charts(sbx: Sandbox) -> None:
    chart = _chart(
        sbx,
        "fig, (left, right) = plt.subplots(1, 2)\nfig.suptitle('both')\n"
        "left.plot([1, 2], [1, 2])\nright.bar(['q'], [5])",
    )
    assert chart.type == ChartType.SUPERCHART
    assert chart.title == "both"
    assert [c.type for c in chart.elements] == [ChartType.LINE, ChartType.BAR]


def test_a_dataframe_result_carries_its_columns_as_data(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import pandas as pd\n"
        "pd.DataFrame({'a': [1, 2, 3], 'when': pd.to_datetime(['2024-01-01'] * 3)})"
    )
    assert execution.error is None
    [result] = execution.results
    assert result.data["a"] == [1, 2, 3]
    assert result.data["when"][0].startswith("2024-01-01T00:00:00")
    assert "<table" in result.html


def test_a_plain_dict_result_also_comes_back_as_json(sbx: Sandbox) -> None:
    execution = sbx.run_code("import numpy as np\n{'n': np.int64(3), 'xs': [1.5]}")
    assert execution.results[0].json == {"n": 3, "xs": [1.5]}


def test_pil_images_are_displayed_on_show_and_on_save_to_a_path(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "from PIL import Image\nimage = Image.new('RGB', (4, 4), 'red')\n"
        "image.show()\nimage.save('red.png')\nprint('done')"
    )
    assert execution.error is None
    assert execution.logs.stdout == ["done\n"]
    pngs = [base64.b64decode(r.png) for r in execution.results]
    assert len(pngs) == 2 and all(p.startswith(PNG_MAGIC) for p in pngs)
    assert sbx.files.read("red.png", format="bytes").startswith(PNG_MAGIC)


def test_the_context_list_has_the_default_python_and_javascript_contexts_first(
    sbx: Sandbox,
) -> None:
    created = sbx.create_code_context(language="python", cwd="/root")
    listed = sbx.list_code_contexts()
    assert [c.language for c in listed[:2]] == ["python", "javascript"]
    assert (listed[-1].id, listed[-1].cwd) == (created.id, "/root")
    # /root works as a working directory: it is the user's home
    sbx.run_code("open('from-root.txt', 'w').write('r')", context=created)
    assert sbx.files.read("/home/user/from-root.txt") == "r"
    assert sbx.run_code("console.log(1 + 1)", language="js").logs.stdout == ["2\n"]
    sbx.remove_code_context(created.id)


def test_killing_the_sandbox_during_run_code_raises_the_sdks_killed_timeout(
    sandboxd: RunningSandboxd,
) -> None:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    started = threading.Event()
    killer = threading.Thread(target=lambda: started.wait(60) and sandbox.kill())
    killer.start()
    try:
        with pytest.raises(TimeoutException, match="sandbox was killed while the request"):
            sandbox.run_code(
                "import time\nprint('running', flush=True)\ntime.sleep(300)",
                on_stdout=lambda _: started.set(),
                timeout=300,
            )
    finally:
        started.set()
        killer.join()


async def test_the_async_sdk_gets_charts_data_and_the_killed_timeout_too(
    sandboxd: RunningSandboxd,
) -> None:
    sandbox = await AsyncSandbox.create(**sandboxd.sdk_options())
    execution = await sandbox.run_code(
        "import pandas as pd\nimport matplotlib.pyplot as plt\n"
        "plt.plot([0, 1], [1, 0])\nplt.show()\npd.DataFrame({'k': ['v']})"
    )
    assert [r.chart.type for r in execution.results if r.chart] == [ChartType.LINE]
    assert execution.results[-1].data == {"k": ["v"]}

    started = asyncio.Event()
    run = asyncio.create_task(
        sandbox.run_code(
            "import time\nprint(1, flush=True)\ntime.sleep(300)", on_stdout=lambda _: started.set()
        )
    )
    await asyncio.wait_for(started.wait(), 60)
    await sandbox.kill()
    with pytest.raises(TimeoutException, match="sandbox was killed while the request"):
        await run
