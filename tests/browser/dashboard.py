"""The dashboard in a real headless browser: Debian's Chromium driven by its
chromedriver through Selenium (nothing is downloaded: the driver's path is given and
Selenium Manager is off). Run by tests/integration/dashboard.rs, which starts
`lc serve`, the workers and the deployment, and passes:

  LC_DASHBOARD_URL       the server's base URL
  LC_DASHBOARD_TOKEN     an admin token (in the environment, never on a command line)
  LC_DASHBOARD_JOB       the id of a running job whose worker is frozen
  LC_DASHBOARD_DEAD_JOB  the id of a job that dies at its first attempt only
  LC_DASHBOARD_DEPLOYMENT  the name of the deployment the test creates
  LC_DASHBOARD_ARTIFACTS a directory for the screenshots

Steps: log in; see the queue and the frozen worker gone; see the job stuck and
requeue it with the keyboard through the confirmation dialog; watch it succeed on its
page; retry the job that died and watch it succeed; watch the deployment's grid turn
green and extend it from its page; filter the jobs; see the queue's chart; pause and
resume the queue; no error in the browser's console (a Content-Security-Policy
violation would be one).
"""

import os
import signal
import sys
import tempfile

# Selenium Manager would download a driver or a browser: never.
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get("LC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LC_CHROMEDRIVER", "/usr/bin/chromedriver")
# Chromium's flags: headless, no sandbox (root in a container), and nothing that
# reaches out (background networking, component updates, sync, QUIC): loopback only.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]

URL = os.environ["LC_DASHBOARD_URL"]
TOKEN = os.environ["LC_DASHBOARD_TOKEN"]
JOB = os.environ["LC_DASHBOARD_JOB"]
DEAD_JOB = os.environ["LC_DASHBOARD_DEAD_JOB"]
DEPLOYMENT = os.environ["LC_DASHBOARD_DEPLOYMENT"]
ARTIFACTS = os.environ["LC_DASHBOARD_ARTIFACTS"]


def step(text):
    print(f"dashboard.py: {text}", flush=True)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='lc-chromium-')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


class Page:
    def __init__(self, driver):
        self.driver = driver
        self.shots = []

    def wait(self, what, condition, timeout=30):
        try:
            # The page redraws its data every 2 s: an element found may be replaced
            # before it is used; such a try counts as not yet.
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2,
                                 ignored_exceptions=[StaleElementReferenceException]).until(lambda d: condition())
        except TimeoutException:
            self.shot(f"failed-{what.replace(' ', '-')}")
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; page text:\n"
                                 + self.driver.find_element(By.TAG_NAME, "body").text)

    def css(self, selector):
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def texts(self, selector):
        """The text of each element matching, read at once (no stale elements)."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map((e) => e.innerText);", selector)

    def attrs(self, selector, name):
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map((e) => e.getAttribute(arguments[1]));",
            selector, name)

    def click(self, what, selector, keys=None):
        """Clicks (or sends keys to) the first element matching, once it is there."""
        def attempt():
            found = self.css(selector)
            if not found:
                return False
            if keys is None:
                found[0].click()
            else:
                found[0].send_keys(keys)
            return True
        self.wait(what, attempt)

    def go(self, route):
        self.driver.get(f"{URL}/#/{route}")
        self.no_token_in_url()

    def shot(self, name):
        path = os.path.join(ARTIFACTS, f"{len(self.shots) + 1:02d}-{name}.png")
        self.driver.save_screenshot(path)
        self.shots.append(path)
        step(f"screenshot {path}")

    def no_token_in_url(self):
        assert TOKEN not in self.driver.current_url, "the token is in the URL"

    def notice(self):
        return " ".join(self.texts("#notice p"))


def log_in(page):
    page.driver.get(URL + "/")
    field = page.wait("the login form", lambda: (page.css("#token") or [None])[0])
    page.shot("login")
    field.send_keys(TOKEN)
    field.send_keys(Keys.ENTER)
    page.wait("the views", lambda: page.css("#nav") and page.css("#nav")[0].is_displayed())
    page.no_token_in_url()
    stored = page.driver.execute_script("return sessionStorage.getItem('lc-dashboard-token')")
    assert stored == TOKEN, "the token is kept in the tab's session storage"
    assert TOKEN not in page.driver.page_source, "the token is not in the page"
    step("logged in")


def see_the_frozen_worker_gone(page):
    page.go("queues")
    page.wait("queue dash", lambda: "dash" in page.texts("main table a"))
    page.go("workers")
    Select(page.wait("the gone-after choice", lambda: (page.css("#gone-after") or [None])[0])).select_by_value("5s")
    page.wait("the frozen worker to be gone", lambda: page.css('main [data-state="gone"]'), timeout=30)
    page.shot("workers")
    step("the frozen worker is gone")


def requeue_the_stuck_job(page):
    page.go("stuck")
    row = f'tr:has(a[data-job="{JOB}"])'
    page.wait("the stuck job", lambda: page.css(row))
    assert f"lc jobs requeue {JOB}" in page.texts(row)[0], page.texts(row)
    page.shot("stuck")
    # With the keyboard: Enter on the button, then Tab from Cancel to Requeue, Enter.
    page.click("the requeue button", f'{row} button[data-action="requeue"]', Keys.ENTER)
    dialog = page.wait("the confirmation", lambda: (page.css("dialog[open]") or [None])[0])
    assert "Requeue job" in dialog.text, dialog.text
    assert page.driver.switch_to.active_element.get_attribute("id") == "confirm-cancel"
    page.shot("confirm")
    page.driver.switch_to.active_element.send_keys(Keys.TAB)
    assert page.driver.switch_to.active_element.get_attribute("id") == "confirm-ok"
    page.driver.switch_to.active_element.send_keys(Keys.ENTER)
    page.wait("the requeue's outcome", lambda: "running → queued" in page.notice() or "failed" in page.notice())
    assert "running → queued" in page.notice(), page.notice()
    step("requeued from the page")


def watch_it_succeed(page):
    page.go(f"jobs/{JOB}")
    page.wait("the job to succeed", lambda: page.css('#job-state [data-state="succeeded"]'), timeout=30)
    page.wait("the requeue in the history", lambda: "requeued by operator" in page.texts("main table")[0])
    page.shot("job")
    step("the job succeeded")


def retry_the_dead_job(page):
    page.go("stuck")
    row = f'tr:has(a[href="#/jobs/{DEAD_JOB}"])'
    page.wait("the dead job", lambda: page.css(row), timeout=30)
    page.click("the retry button", f'{row} button[data-action="retry"]')
    page.wait("the confirmation", lambda: page.css("dialog[open]"))
    page.click("the confirm button", "#confirm-ok")
    page.wait("the retry's outcome", lambda: "dead → queued" in page.notice() or "failed" in page.notice())
    assert "dead → queued" in page.notice(), page.notice()
    page.go(f"jobs/{DEAD_JOB}")
    page.wait("the retried job to succeed", lambda: page.css('#job-state [data-state="succeeded"]'), timeout=30)
    page.wait("the retry in the history", lambda: "retried by operator" in page.texts("main table")[0])
    step("retried the dead job from the page")


def watch_the_grid_turn_green(page):
    page.go("deployments")
    card = f'section[data-deployment="{DEPLOYMENT}"]'
    page.wait("the deployment's card", lambda: page.css(card), timeout=30)
    page.wait("the grid to turn green", lambda: page.css(f'{card}[data-healthy="true"]'), timeout=45)
    tones = page.attrs(f"{card} .machine, {card} .container", "data-tone")
    assert tones == ["good"] * 4, tones
    assert "expires in" in page.texts(card)[0]
    page.shot("deployments")
    step("the deployment's grid is green")


def extend_the_deployment(page):
    page.click("the deployment's link", f'section[data-deployment="{DEPLOYMENT}"] h2 a')
    page.wait("the deployment's history", lambda: "deployed" in (page.texts("main table") or [""])[0])
    page.click("the extend button", 'button[data-action="extend"]')
    field = page.wait("the extend dialog", lambda: page.css('dialog[open] input[name="by"]'))[0]
    assert page.driver.switch_to.active_element == field
    field.clear()
    field.send_keys("2h")
    page.css("#confirm-ok")[0].click()
    page.wait("the new expiry", lambda: "now expires" in page.notice() or "failed" in page.notice())
    assert "now expires" in page.notice(), page.notice()
    page.wait("the later expiry", lambda: "expires in 2h" in page.texts(f'section[data-deployment="{DEPLOYMENT}"]')[0])
    page.shot("deployment")
    step("extended the deployment from its page")


def filter_the_jobs(page):
    page.go("jobs")
    form = page.wait("the filters", lambda: (page.css("#job-filters") or [None])[0])
    Select(form.find_element(By.NAME, "state")).select_by_value("succeeded")
    queue = form.find_element(By.NAME, "queue")
    queue.send_keys("dash")
    queue.send_keys(Keys.ENTER)
    page.wait("the filtered list", lambda: "queue=dash" in page.driver.current_url
              and page.css(f'a[href="#/jobs/{JOB}"]') and page.css(f'a[href="#/jobs/{DEAD_JOB}"]'))
    rows = page.texts("main tbody tr")
    assert len(rows) == 2, rows  # the requeued job and the retried one
    step("the job list filters")


def see_the_chart(page):
    page.go("queues")
    totals = '[data-totals="dash"]'
    page.wait("the hour's totals", lambda: "2 succeeded, 0 dead" in " ".join(page.texts(totals)))
    # The chart shown is the one fetched for these totals, and it is drawn.
    page.wait("the chart of these totals", lambda: page.driver.execute_script(
        "const img = document.querySelector('img[data-queue=\"dash\"]');"
        " return !!img && img.dataset.drawn === arguments[0] && img.complete && img.naturalWidth > 0;",
        "2 succeeded, 0 dead in the last hour"))
    page.shot("queues")
    step("the queue's chart is drawn")


def pause_and_resume(page):
    row = 'tr:has(a[href="#/jobs?queue=dash"])'
    for verb, state in (("pause", "paused"), ("resume", "active")):
        page.click(f"the {verb} button", f'{row} button[data-action="{verb}"]')
        page.wait("the confirmation", lambda: page.css("dialog[open]"))
        page.click("the confirm button", "#confirm-ok")
        page.wait(f"queue dash {state}", lambda: page.css(f'{row} [data-state="{state}"]'))
    step("paused and resumed queue dash")


def console_errors(driver):
    # Chromium reports refused resources, CSP violations and uncaught errors as SEVERE.
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def main():
    # The Rust test bounds this script too (90 s); a hang ends here first, through
    # `finally`, so that the browser and its driver end with it.
    def too_long(*_):
        raise AssertionError("the browser run took over 80 s")
    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(80)
    os.makedirs(ARTIFACTS, exist_ok=True)
    driver = browser()
    page = Page(driver)
    try:
        log_in(page)
        see_the_frozen_worker_gone(page)
        requeue_the_stuck_job(page)
        watch_it_succeed(page)
        retry_the_dead_job(page)
        watch_the_grid_turn_green(page)
        extend_the_deployment(page)
        filter_the_jobs(page)
        see_the_chart(page)
        pause_and_resume(page)
        errors = console_errors(driver)
        assert not errors, f"errors in the browser's console: {errors}"
    finally:
        driver.quit()
    step(f"passed; screenshots: {' '.join(page.shots)}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as err:
        print(f"dashboard.py: FAILED: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
