/*
 * ansi_up (npm) ships only as an ES module; the workspace's scripts are classic scripts, so
 * this module hands its class to them as window.AnsiUp. Module scripts run in document order
 * with the deferred ones, so output.js finds it when the page starts.
 */
import { AnsiUp } from "../vendor/ansi_up/ansi_up.js";

window.AnsiUp = AnsiUp;
