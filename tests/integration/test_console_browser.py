"""The web console in a real Chromium (Debian's `chromium`, driven by Playwright) against the real
server process, with a real sshd on loopback as the machine a script runs on.

The main story signs in, declares a key, a cloud and an SSH machine, writes a script and a
schedule through the forms (watching the live preview), meets a field error, runs the schedule
now and watches the run page turn from running to succeeded without reloading, edits, disables,
deletes and signs out. It takes the screenshots the README shows: into a temporary directory,
or into docs/ when CLOUDCRON_SCREENSHOTS_DIR says so (`make screenshots`), so a test run leaves the
checkout as it found it.
"""
from __future__ import annotations

import os
import re
import time

import pytest
from playwright.sync_api import expect

from tests.harness.service import REPO_ROOT, start_service

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling home, which a closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Where the screenshots go: CLOUDCRON_SCREENSHOTS_DIR (docs/ for `make screenshots`) or a temp dir."""
    target = os.environ.get("CLOUDCRON_SCREENSHOTS_DIR")
    return (REPO_ROOT / target) if target else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: the console tests need Debian's chromium package "
                    "(`make test` installs it)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    """A real service of its own (org `test`), so what the tests count is theirs alone."""
    service = start_service(tmp_path_factory.mktemp("console") / "data")
    try:
        yield service
    finally:
        service.stop()


def new_page(browser, svc, **options):
    context = browser.new_context(base_url=svc.url, viewport=options.pop("viewport", {"width": 1280, "height": 860}),
                                  **options)
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()


def sign_in(page, token: str) -> None:
    page.goto("/ui/")
    assert "/ui/signin" in page.url
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()


def nav(page, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()


def status_of(svc, path):
    return svc.api("GET", path)


def test_a_person_schedules_a_script_on_an_ssh_machine_and_watches_it_run(browser, svc, sshd_hosts, shots):
    target = sshd_hosts[0]
    started = time.time()
    context, page = new_page(browser, svc)
    try:
        sign_in(page, svc.token)

        # A key, an `other` cloud and the sshd machine, all through the console's forms.
        nav(page, "Keys")
        page.get_by_label("Name", exact=True).fill("harness")
        page.get_by_label("Private key").fill(target.private_key)
        page.get_by_role("button", name="Add key").click()
        page.get_by_role("heading", name="harness").wait_for()
        assert "ssh-ed25519 " in page.locator("section.key pre").inner_text()
        assert "PRIVATE KEY" not in page.content()

        nav(page, "Clouds")
        page.get_by_label("Title").fill("lab")
        page.get_by_role("button", name="Add cloud").click()
        page.get_by_role("heading", name="Declare an SSH machine").wait_for()
        page.get_by_label("Name", exact=True).fill("box1")
        page.get_by_label("Host").fill(target.host)
        page.get_by_label("Port").fill(str(target.port))
        page.get_by_label("SSH user").fill(target.user)
        page.get_by_label("SSH key").select_option(label="harness")
        page.get_by_role("button", name="Declare machine").click()
        page.get_by_role("cell", name="box1", exact=True).first.wait_for()

        nav(page, "Scripts")
        page.get_by_role("link", name="New script").click()
        page.get_by_label("Name", exact=True).fill("hello")
        page.get_by_label("Script", exact=True).fill('#!/bin/sh\necho "hello from $(hostname)"\necho "to stderr" >&2\n')
        page.get_by_role("button", name="Create script").click()
        page.get_by_role("heading", name="hello").wait_for()

        # The schedule form, its live preview, and a field error read as the API's.
        nav(page, "Schedules")
        page.get_by_role("link", name="New schedule").click()
        page.get_by_label("Name", exact=True).fill("greet")
        page.get_by_label("Run a script").check()
        page.get_by_label("Script", exact=True).select_option(label="hello (executable)")
        page.get_by_label("box1").check()
        preview = page.locator("#preview")
        before = preview.inner_text()
        page.get_by_label("Crontab").check()
        page.get_by_label("Minute").fill("30")
        page.get_by_label("Hour").fill("4")
        page.get_by_label("Timezone", exact=True).fill("Europe/Athens")
        expect(preview).to_contain_text("04:30:00 Europe/Athens")
        after = preview.inner_text()
        assert after != before and after.count("04:30:00 Europe/Athens") == 10
        status, expected = svc.api("POST", "schedules/preview", {
            "schedule_type": "crontab", "schedule_entry": {"minute": "30", "hour": "4"},
            "timezone": "Europe/Athens", "count": 10})
        shown = page.locator("#preview time").evaluate_all("els => els.map(e => e.getAttribute('datetime'))")
        assert len(shown) == 10 and shown[0].startswith(expected["next_run_times"][0][:16])
        page.get_by_label("Hour").fill("99")
        expect(preview).to_contain_text("schedule_entry.hour")
        assert "schedule_entry.hour: 99 is out of range" in preview.inner_text()
        page.get_by_label("Hour").fill("4")

        page.get_by_label("Expires").fill("2020-01-01T00:00:00")
        page.get_by_role("button", name="Create schedule").click()
        error = page.locator("#expires-error")
        error.wait_for()
        status, api_error = svc.api("POST", "schedules", {
            "name": "greet", "script_id": status_of(svc, "scripts")[1][0]["id"],
            "machines_per_cloud": [[status_of(svc, "clouds")[1][0]["id"], "box1"]], "schedule_type": "crontab",
            "schedule_entry": {"minute": "30", "hour": "4"}, "timezone": "Europe/Athens", "expires": "2020-01-01 00:00:00"})
        assert status == 400 and api_error["error"].startswith("expires: ") and "is not in the future" in api_error["error"]
        assert error.inner_text() == api_error["error"]
        expires = page.get_by_label("Expires")
        assert expires.get_attribute("aria-invalid") == "true"
        assert expires.get_attribute("aria-describedby") == "expires-error"
        assert page.evaluate("document.activeElement.id") == "expires"
        assert page.evaluate("document.getElementById('expires').parentElement === "
                             "document.getElementById('expires-error').parentElement")
        assert status_of(svc, "schedules")[1] == []
        expires.fill("")
        page.get_by_role("button", name="Create schedule").click()
        page.get_by_role("heading", name="greet").wait_for()
        assert "every day at 04:30 Europe/Athens" in page.locator("p.lead").inner_text()
        assert page.locator("ol.timeline li").count() == 10

        # Run it now on the sshd target; the run page refreshes itself (no reload) until it succeeds.
        page.get_by_role("button", name="Run now").click()
        page.wait_for_url(re.compile(r"/ui/runs/[0-9a-f]{32}$"))
        page.evaluate("window.__sameDocument = true")
        seen = []

        def poll():
            state = page.locator("#run-status").inner_text()
            if not seen or seen[-1] != state:
                seen.append(state)
            return state

        deadline_ms = 180_000
        waited = 0
        while poll() not in ("succeeded", "failed", "partial", "timed_out", "interrupted") and waited < deadline_ms:
            page.wait_for_timeout(100)
            waited += 100
        assert seen[-1] == "succeeded", (seen, page.locator("table.machines").inner_text())
        assert "running" in seen, seen
        assert page.evaluate("window.__sameDocument === true"), "the run page reloaded instead of refreshing in place"
        row = page.locator("table.machines tbody tr").first
        assert "box1" in row.inner_text() and "succeeded" in row.inner_text()
        assert row.locator("td").nth(2).inner_text().strip() == "0"
        stdout = row.locator("details", has_text="stdout")
        assert not stdout.locator("pre").is_visible()  # collapsed until asked for
        stdout.locator("summary").click()
        assert "hello from" in stdout.locator("pre").inner_text()
        stderr = row.locator("details", has_text="stderr")
        stderr.locator("summary").click()
        assert stderr.locator("pre").inner_text().strip() == "to stderr"
        assert stdout.locator("pre").evaluate("e => getComputedStyle(e).fontFamily").lower().find("mono") >= 0
        page.screenshot(path=str(shots / "console-run.png"), full_page=True)

        page.get_by_role("link", name="greet").click()
        page.get_by_role("heading", name="Runs").wait_for()
        assert page.locator("table tbody tr", has_text="manual").count() == 1
        page.screenshot(path=str(shots / "console-schedule.png"), full_page=True)

        nav(page, "Dashboard")
        assert "succeeded" in page.locator("section.card", has_text="Runs in the last 24 h").inner_text()
        assert "greet" in page.locator("section.card", has_text="Due in the next 24 h").inner_text()
        page.screenshot(path=str(shots / "console-dashboard.png"), full_page=True)
        for name in ("dashboard", "schedule", "run"):
            shot = shots / f"console-{name}.png"
            assert shot.stat().st_size > 10_000 and shot.stat().st_mtime > started - 1, shot

        # Edit, disable, delete.
        nav(page, "Schedules")
        page.get_by_role("link", name="greet").click()
        page.get_by_role("link", name="Edit").click()
        page.get_by_label("Every …").check()
        page.get_by_label("Every", exact=True).fill("6")
        page.get_by_label("Period").select_option("hours")
        page.get_by_role("button", name="Save changes").click()
        page.get_by_role("heading", name="greet").wait_for()
        assert "every 6 hours" in page.locator("p.lead").inner_text()
        [stored] = status_of(svc, "schedules")[1]
        assert stored["schedule_entry"] == {"every": 6, "period": "hours"} and stored["timezone"] == "Europe/Athens"

        page.get_by_role("button", name="Disable").click()
        page.get_by_role("button", name="Enable").wait_for()
        assert "no next run" in page.locator("p.lead").inner_text()
        assert status_of(svc, f"schedules/{stored['id']}")[1]["enabled"] is False

        page.get_by_role("link", name="Delete").click()
        page.get_by_role("button", name="Delete schedule").click()
        page.get_by_role("heading", name="Schedules").wait_for()
        assert "greet" not in page.locator("table.schedules").inner_text()
        assert status_of(svc, f"schedules/{stored['id']}")[0] == 404

        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("heading", name="Sign in").wait_for()
        page.goto("/ui/schedules")
        assert "/ui/signin" in page.url
    finally:
        context.close()


def test_a_person_pauses_a_schedule_until_a_date_and_resumes_it(browser, svc):
    token = svc.create_token("pauser")
    status, cloud = svc.api("POST", "clouds", {"title": "lab", "provider": "other"}, token=token)
    assert status == 200, cloud
    status, schedule = svc.api("POST", "schedules", {
        "name": "nightly-stop", "action": "stop", "machines_per_cloud": [[cloud["id"], "i-1"]],
        "schedule_type": "crontab", "schedule_entry": {"minute": "0", "hour": "2"}, "timezone": "Europe/Athens"},
        token=token)
    assert status == 200, schedule
    context, page = new_page(browser, svc)
    try:
        sign_in(page, token)
        nav(page, "Schedules")
        page.get_by_role("link", name="nightly-stop").click()
        page.get_by_role("heading", name="Pause").wait_for()

        # A date in the past is the API's 400, beside the field; nothing is paused.
        page.get_by_label("Until").fill("2020-01-01T00:00:00")
        page.get_by_role("button", name="Pause", exact=True).click()
        error = page.locator("#until-error")
        error.wait_for()
        assert error.inner_text() == "until: 2019-12-31T22:00:00Z is not in the future"  # read in Athens time
        assert page.get_by_label("Until").get_attribute("aria-invalid") == "true"
        assert svc.api("GET", f"schedules/{schedule['id']}", token=token)[1]["paused"] is False

        page.get_by_label("Until").fill("2030-01-07T06:00:00")
        page.get_by_label("Note").fill("DB migration, ask Eleni")
        page.get_by_role("button", name="Pause", exact=True).click()
        badge = page.locator("p.lead .badge.paused")
        expect(badge).to_have_text("paused until 2030-01-07 04:00:00 UTC")
        assert "DB migration, ask Eleni" in page.locator("p.lead").inner_text()
        stored = svc.api("GET", f"schedules/{schedule['id']}", token=token)[1]
        assert stored["paused"] is True and stored["paused_until"] == "2030-01-07T04:00:00Z"
        # The timeline marks every fire the pause holds.
        assert page.locator("ol.timeline li.marked").count() == 10

        nav(page, "Schedules")
        page.get_by_label("Status").select_option("paused")
        row = page.locator("table.schedules tbody tr", has_text="nightly-stop")
        expect(row.locator(".badge.paused")).to_have_text("paused until 2030-01-07 04:00:00 UTC")

        row.get_by_role("link", name="nightly-stop").click()
        page.get_by_role("button", name="Resume").click()
        page.get_by_role("heading", name="Pause").wait_for()
        expect(page.locator("p.lead .badge.paused")).to_have_count(0)
        assert page.get_by_role("button", name="Resume").count() == 0
        stored = svc.api("GET", f"schedules/{schedule['id']}", token=token)[1]
        assert stored["paused"] is False and stored["next_run_at"] is not None
        actions = [e["action"] for e in svc.api("GET", f"audit?id={schedule['id']}", token=token)[1]]
        assert actions[:2] == ["resume", "pause"]
    finally:
        context.close()


@pytest.fixture(scope="module")
def stored(svc):
    """A cloud and a schedule of org `test`, made through the API."""
    status, cloud = svc.api("POST", "clouds", {"title": "private-lab", "provider": "other"})
    assert status == 200, cloud
    status, schedule = svc.api("POST", "schedules", {
        "name": "secret-nightly", "action": "stop", "machines_per_cloud": [[cloud["id"], "i-1"]],
        "schedule_type": "crontab", "schedule_entry": {"minute": "0", "hour": "2"}})
    assert status == 200, schedule
    return {"cloud": cloud, "schedule": schedule}


def test_a_second_orgs_token_sees_none_of_it(browser, svc, stored):
    rival = svc.create_token("rival")
    context, page = new_page(browser, svc)
    try:
        sign_in(page, rival)
        nav(page, "Schedules")
        assert "No schedules" in page.locator("table.schedules").inner_text()
        nav(page, "Clouds")
        assert "private-lab" not in page.content()
        for path in (f"/ui/schedules/{stored['schedule']['id']}", f"/ui/clouds/{stored['cloud']['id']}",
                     f"/ui/schedules/{stored['schedule']['id']}/edit"):
            resp = page.goto(path)
            assert resp.status == 404, path
            assert "secret-nightly" not in page.content()
    finally:
        context.close()


def test_a_form_posted_without_its_csrf_token_is_refused(browser, svc, stored):
    context, page = new_page(browser, svc)
    try:
        sign_in(page, svc.token)
        sid = stored["schedule"]["id"]
        for form in ({}, {"csrf_token": "forged"}):
            resp = context.request.post(f"{svc.url}/ui/schedules/{sid}/delete", form=form)
            assert resp.status == 400 and "CSRF" in resp.text(), resp.text()
        assert svc.api("GET", f"schedules/{sid}")[0] == 200
        # The same session's real form still works: the refusal was the token's, not the session's.
        page.goto(f"/ui/schedules/{sid}")
        page.get_by_role("button", name="Disable").click()
        page.get_by_role("button", name="Enable").wait_for()
        page.get_by_role("button", name="Enable").click()
        page.get_by_role("button", name="Disable").wait_for()
    finally:
        context.close()


def test_it_reads_without_javascript_and_fits_a_phones_width(browser, svc, stored):
    context, page = new_page(browser, svc, java_script_enabled=False, viewport={"width": 375, "height": 740})
    try:
        sign_in(page, svc.token)
        for path in ("/ui/", "/ui/schedules", f"/ui/schedules/{stored['schedule']['id']}", "/ui/logs", "/ui/clouds"):
            page.goto(path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
        page.goto(f"/ui/schedules/{stored['schedule']['id']}")
        assert "every day at 02:00 UTC" in page.locator("p.lead").inner_text()
        assert page.locator("ol.timeline li").count() == 10
        page.goto("/ui/schedules/new")
        page.get_by_label("Crontab").check()
        page.get_by_label("Hour").fill("5")
        page.get_by_label("Minute").fill("15")
        page.get_by_role("button", name="Preview").click()  # without JavaScript the preview is a button
        assert "05:15:00 UTC" in page.locator("#preview").inner_text()
        for box in page.locator("input:not([type=hidden]), select, textarea").all():
            box_id = box.get_attribute("id")
            assert box_id and page.locator(f"label[for='{box_id}']").count() == 1, f"no label for {box_id}"
    finally:
        context.close()


def test_long_unbroken_names_still_fit_a_phones_width(browser, svc):
    """Provider ids, generated names and 40-digit numbers do not break where a line can: pages and
    forms must still fit 375 px instead of scrolling sideways."""
    token = svc.create_token("long-names")
    long = "x" * 30 + "0123456789" * 4

    def made(path, body):
        status, answer = svc.api("POST", path, body, token=token)
        assert status == 200, answer
        return answer

    cloud = made("clouds", {"title": "cloud-" + long, "provider": "other"})
    key = made("keys", {"name": "key-" + long, "generate": True})
    made("channels", {"name": "channel-" + long, "kind": "webhook", "secret": "s" * 16,
                      "url": "https://hooks-" + long + ".example.com/x"})
    made(f"clouds/{cloud['id']}/machines", {"name": "machine-" + long, "host": "10.0.0.1", "key_id": key["id"],
                                            "tags": {"tag-" + long: "value-" + long}})
    script = made("scripts", {"name": "script-" + long, "description": "about-" + long, "script": "#!/bin/sh\ntrue\n"})
    schedule = made("schedules", {"name": "schedule-" + long, "description": "why-" + long, "script_id": script["id"],
                                  "params": "--flag=" + long, "machines_per_cloud": [[cloud["id"], "machine-" + long]],
                                  "schedule_type": "crontab", "schedule_entry": {"minute": "0", "hour": "2"}})
    context, page = new_page(browser, svc, viewport={"width": 375, "height": 740})
    try:
        sign_in(page, token)
        for path in ("/ui/", "/ui/schedules", f"/ui/schedules/{schedule['id']}", f"/ui/schedules/{schedule['id']}/edit",
                     "/ui/schedules/new", f"/ui/schedules/{schedule['id']}/delete", "/ui/clouds",
                     f"/ui/clouds/{cloud['id']}", "/ui/scripts", f"/ui/scripts/{script['id']}",
                     f"/ui/scripts/{script['id']}/edit", "/ui/keys", "/ui/channels", "/ui/logs"):
            page.goto(path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
    finally:
        context.close()


def test_an_opened_output_stays_open_while_the_run_page_refreshes(browser, svc, sshd_hosts, tmp_path):
    """While a run is still going, the page refreshes itself every second; a machine that has finished
    shows its output, and a person reading it must not see it fold shut at the next refresh."""
    token = svc.create_token("reader")
    fast, slow = sshd_hosts[0], sshd_hosts[1]
    release = tmp_path / "release"  # the slow machine's script waits for this file (both run on this host)

    def made(path, body):
        status, answer = svc.api("POST", path, body, token=token)
        assert status == 200, answer
        return answer

    key = made("keys", {"name": "harness", "private": fast.private_key})
    cloud = made("clouds", {"title": "lab", "provider": "other"})
    for name, host in (("fast", fast), ("slow", slow)):
        made(f"clouds/{cloud['id']}/machines", {"name": name, "host": host.host, "port": host.port,
                                                "ssh_user": host.user, "key_id": key["id"]})
    script = made("scripts", {"name": "wait", "script": (
        "#!/bin/sh\n"
        "echo \"output of port ${SSH_CONNECTION##* }\"\n"
        f"if [ \"${{SSH_CONNECTION##* }}\" = {slow.port} ]; then\n"
        f"  i=0; while [ ! -e {release} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done\n"
        "fi\n")})
    schedule = made("schedules", {"name": "two", "script_id": script["id"], "schedule_type": "crontab",
                                  "machines_per_cloud": [[cloud["id"], "fast"], [cloud["id"], "slow"]],
                                  "schedule_entry": {"minute": "0", "hour": "2"}})
    context, page = new_page(browser, svc)
    try:
        sign_in(page, token)
        page.goto(f"/ui/schedules/{schedule['id']}")
        page.get_by_role("button", name="Run now").click()
        page.wait_for_url(re.compile(r"/ui/runs/[0-9a-f]{32}$"))
        stdout = page.locator("table.machines tbody tr", has_text="fast").locator("details", has_text="stdout")
        stdout.wait_for(timeout=120_000)
        assert page.locator("#run-status").inner_text() == "running"
        stdout.locator("summary").click()
        assert stdout.evaluate("e => e.open")
        page.wait_for_timeout(3_000)  # three refreshes
        assert page.locator("#run-status").inner_text() == "running"
        assert stdout.evaluate("e => e.open"), "the output folded shut at a refresh"
        # The refreshes named the output the page holds, got an empty element back and kept the page's own.
        assert re.search(r"[?&]shown=\d", page.locator("#run").get_attribute("hx-get"))
        assert f"output of port {fast.port}" in stdout.locator("pre").inner_text()
        release.touch()
        expect(page.locator("#run-status")).to_have_text("succeeded", timeout=120_000)
        slow_out = page.locator("table.machines tbody tr", has_text="slow").locator("details", has_text="stdout")
        slow_out.locator("summary").click()
        assert f"output of port {slow.port}" in slow_out.locator("pre").inner_text()
    finally:
        release.touch()
        context.close()


def test_hostile_text_is_shown_as_text_and_no_inline_script_runs(browser, svc):
    """Names, descriptions, a script and a machine's tags full of markup render as text; the CSP stops a
    script that would be inserted inline anyway; the session cookie is out of a script's reach."""
    token = svc.create_token("hostile")
    markup = '"><script>alert(1)</script><img src=x onerror=alert(2)><svg onload=alert(3)>'

    def made(path, body):
        status, answer = svc.api("POST", path, body, token=token)
        assert status == 200, answer
        return answer

    cloud = made("clouds", {"title": "lab" + markup, "provider": "other", "options": {"note": markup}})
    made(f"clouds/{cloud['id']}/machines", {"name": "web" + markup, "host": "10.0.0.1", "tags": {"k": markup}})
    script = made("scripts", {"name": "s" + markup, "description": markup, "script": "#!/bin/sh\necho '" + markup})
    schedule = made("schedules", {"name": "n" + markup, "description": markup, "script_id": script["id"],
                                  "params": markup, "machines_per_cloud": [[cloud["id"], "web" + markup]],
                                  "schedule_type": "crontab", "schedule_entry": {"minute": "0", "hour": "2"}})
    made("keys", {"name": "k" + markup, "generate": True})
    made("channels", {"name": "c" + markup, "kind": "webhook", "url": "https://hooks.example.com/x", "secret": "s" * 16})
    context, page = new_page(browser, svc)
    dialogs, violations = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        sign_in(page, token)
        for path in ("/ui/", "/ui/schedules", f"/ui/schedules/{schedule['id']}", f"/ui/schedules/{schedule['id']}/edit",
                     f"/ui/schedules/{schedule['id']}/delete", "/ui/clouds", f"/ui/clouds/{cloud['id']}", "/ui/scripts",
                     f"/ui/scripts/{script['id']}", f"/ui/scripts/{script['id']}/edit", "/ui/keys", "/ui/channels",
                     "/ui/logs?run_id=" + markup, "/ui/schedules?q=" + markup):
            page.goto(path)
            assert page.locator("main script, main img, main svg").count() == 0, path
        page.goto(f"/ui/schedules/{schedule['id']}")
        assert page.get_by_role("heading", level=1).inner_text() == "n" + markup
        page.evaluate("() => { const s = document.createElement('script');"
                      " s.textContent = 'window.__inline = true'; document.body.appendChild(s); }")
        assert page.evaluate("window.__inline") is None
        assert any("script-src 'self'" in v for v in violations)
        assert page.evaluate("document.cookie") == ""  # HttpOnly
        assert dialogs == []
    finally:
        context.close()
