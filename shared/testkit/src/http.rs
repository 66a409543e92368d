//! Sending test requests without the `.send().await.unwrap()` ceremony: a
//! request that cannot be sent, or a body that does not parse, fails the
//! test with what went wrong.

use serde::de::DeserializeOwned;

/// Extra verbs on `reqwest::RequestBuilder` for tests.
pub trait RequestExt {
    /// Sends the request; failing to send fails the test.
    fn sent(self) -> impl Future<Output = reqwest::Response> + Send;
    /// Sends the request and parses its JSON body, whatever the status.
    fn fetch_json<T: DeserializeOwned>(self) -> impl Future<Output = T> + Send;
}

impl RequestExt for reqwest::RequestBuilder {
    async fn sent(self) -> reqwest::Response {
        self.send()
            .await
            .unwrap_or_else(|e| panic!("sending the request failed: {e}"))
    }

    async fn fetch_json<T: DeserializeOwned>(self) -> T {
        let response = self.sent().await;
        let status = response.status();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading the {status} response failed: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("the {status} response is not the JSON expected ({e}): {text}")
        })
    }
}
