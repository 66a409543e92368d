//! The web console in a real browser: headless Chromium (Debian's
//! `chromium` and `chromium-driver`, which `.ci/run` installs) driven over
//! WebDriver, against the whole stack in process on the test broker.

use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use testkit::TestKafka;

const DEADLINE: Duration = Duration::from_secs(30);

/// A newcomer's first look: a tenant request sent from the page shows
/// `sbx-123` in its dispatch and waiter lanes, with the baseline's skip,
/// while a baseline request stays on the baseline; a tenant is created and
/// deleted through the page with the registry token typed in.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_a_tenants_lanes_and_manages_tenants() {
    if !testkit::tool_available("chromedriver", "chromium chromium-driver") {
        return;
    }
    let telemetry = testkit::telemetry();
    let kafka = TestKafka::start().await.unwrap();
    let names = demo::StackNames::unique("console", &testkit::unique_name("stack"));
    for (topic, partitions) in names.topics() {
        kafka.create_topic(topic, partitions).await.unwrap();
    }
    let options = demo::StackOptions {
        names,
        ..demo::StackOptions::default()
    };
    let token = options.token.clone();
    let mut stack = demo::Stack::start(&kafka.settings(), options)
        .await
        .unwrap();
    stack.start_variant("sbx-123", true, true).await.unwrap();
    stack
        .map("123", &[("dispatch", "sbx-123"), ("waiter", "sbx-123")])
        .await
        .unwrap();
    let console = stack.start_console(0, telemetry.spans()).await.unwrap();

    let driver = ChromeDriver::start();
    let browser = driver.session().await;
    browser.goto(&console).await.unwrap();

    // A tenant request from the form: its lanes name the variant.
    let tenant_trace = send_from_page(&browser, "123").await;
    for lane in ["dispatch", "waiter"] {
        wait_for(
            &browser,
            &format!(
                "#flow-rows tr[data-trace='{tenant_trace}'] td[data-lane='{lane}'][data-variant='sbx-123']"
            ),
        )
        .await;
    }
    wait_for(
        &browser,
        &format!("#flow-rows tr[data-trace='{tenant_trace}'] [data-skipped-by='baseline']"),
    )
    .await;
    // A baseline request stays on the baseline.
    let baseline_trace = send_from_page(&browser, "").await;
    for lane in ["gateway", "dispatch", "waiter", "ledger"] {
        wait_for(
            &browser,
            &format!(
                "#flow-rows tr[data-trace='{baseline_trace}'] td[data-lane='{lane}'][data-variant='baseline']"
            ),
        )
        .await;
    }

    // Tenants: create one mapped to the registered variants, then delete it.
    browser
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&token)
        .await
        .unwrap();
    browser
        .find(Locator::Id("tenant-id"))
        .await
        .unwrap()
        .send_keys("456")
        .await
        .unwrap();
    for service in ["dispatch", "waiter"] {
        wait_for(
            &browser,
            &format!("#tenant-{service} option[value='sbx-123']"),
        )
        .await
        .click()
        .await
        .unwrap();
    }
    browser
        .find(Locator::Id("tenant-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&browser, "#tenant-rows tr[data-tenant='456']").await;
    let mapped = stack
        .http
        .get(format!("{}/tenants/456", stack.registry))
        .send()
        .await
        .unwrap();
    assert_eq!(
        mapped.status(),
        200,
        "the page's mapping reached the registry"
    );
    wait_for(&browser, "#tenant-rows button[data-delete='456']")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&browser, "#tenant-message[data-state='ok']").await;
    browser
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::XPath(
            "//tbody[@id='tenant-rows'][not(tr[@data-tenant='456'])]",
        ))
        .await
        .unwrap();

    browser.close().await.unwrap();
    stack.stop().await.unwrap();
}

/// Sends one request from the page's form as `tenant` (empty: none) and
/// returns its trace id from the summary.
async fn send_from_page(browser: &Client, tenant: &str) -> String {
    let field = browser.find(Locator::Id("send-tenant")).await.unwrap();
    field.clear().await.unwrap();
    if !tenant.is_empty() {
        field.send_keys(tenant).await.unwrap();
    }
    browser
        .find(Locator::Id("send-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let summary = wait_for(browser, "#send-summary[data-done='ok'][data-answered='1']").await;
    summary
        .attr("data-traces")
        .await
        .unwrap()
        .expect("the summary names the request's trace")
}

async fn wait_for(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("`{css}` never appeared: {e}"))
}

/// A `chromedriver` on a free loopback port, killed on drop.
struct ChromeDriver {
    child: std::process::Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's `chromium-driver`; .ci/run installs it)");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A headless Chromium session, once the driver answers.
    async fn session(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }),
        );
        let url = self.url.clone();
        testkit::eventually("chromedriver starts a session", DEADLINE, || {
            let capabilities = capabilities.clone();
            let url = url.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await
        .unwrap()
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
