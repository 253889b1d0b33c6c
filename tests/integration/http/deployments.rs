//! A deployment over HTTP with a worker running: planned (dry run, nothing written),
//! created (a repeated Idempotency-Key makes no second one), shown, hidden from other
//! owners, extended, torn down, on the local engine.

use crate::deploy::{Containers, image};
use std::time::Duration;

use lc_tests::{TestEnv, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Server, expect_json, expect_problem, token};

fn spec(name: &str, owner: &str) -> String {
    format!(
        "name: {name}\nowner: {owner}\nnodes: 2\nprovider: {{kind: local}}\nttl: 1h\n\
         payload:\n  image: {}\n  command: [sleep, '3600']\n  network_mode: none\n  pull: never\n\
         timeouts: {{stop: 1s}}\n",
        image()
    )
}

async fn state_of(server: &Server, token: &str, name: &str) -> String {
    let view = expect_json(
        server.get(&format!("/v1/deployments/{name}"), token).await,
        StatusCode::OK,
    )
    .await;
    view["deployment"]["state"].as_str().unwrap().to_owned()
}

async fn wait_state(server: &Server, token: &str, name: &str, state: &str) {
    wait_for(
        &format!("deployment {name} {state}"),
        Duration::from_secs(90),
        || async { (state_of(server, token, name).await == state).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn http_deployment_created_shown_and_torn_down_with_a_worker() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &[]).await;
    let alice = token(&env, "alice", false);
    let bob = token(&env, "bob", false);
    let admin = token(&env, "ops", true);
    let name = format!("web-{}", &env.prefix[1..9]);
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(env.worker_config());
    let yaml = spec(&name, "alice");
    let create = |token: String, body: String, query: &'static str| {
        let server = &server;
        async move {
            server
                .request(
                    Method::POST,
                    &format!("/v1/deployments{query}"),
                    Some(&token),
                )
                .header("content-type", "application/yaml")
                .header("Idempotency-Key", "create-web")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };

    // A plan writes nothing.
    let plan = expect_json(
        create(alice.clone(), yaml.clone(), "?dry_run=true").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(plan["machines"].as_array().unwrap().len(), 2, "{plan}");
    expect_problem(
        server.get(&format!("/v1/deployments/{name}"), &alice).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Bob may not create alice's deployment.
    expect_problem(
        create(bob.clone(), yaml.clone(), "").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    let created = expect_json(
        create(alice.clone(), yaml.clone(), "").await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["name"], name.as_str());
    let again = create(alice.clone(), yaml.clone(), "").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        expect_json(again, StatusCode::CREATED).await,
        created,
        "the same answer, no second deployment"
    );
    let other = create(
        alice.clone(),
        spec(&name, "alice").replace("nodes: 2", "nodes: 3"),
        "",
    )
    .await;
    expect_problem(other, StatusCode::UNPROCESSABLE_ENTITY).await;
    let count: i64 = env
        .sql()
        .await
        .query_one("SELECT count(*) FROM deployments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);

    wait_state(&server, &alice, &name, "deployed").await;
    let view = expect_json(
        server.get(&format!("/v1/deployments/{name}"), &alice).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["machines"].as_array().unwrap().len(), 2, "{view}");
    assert_eq!(view["containers"].as_array().unwrap().len(), 2, "{view}");
    assert!(!view["events"].as_array().unwrap().is_empty());

    // Its jobs, by the filter of `lc jobs ls --deployment`: for its owner, not for bob.
    let jobs = expect_json(
        server
            .get(&format!("/v1/jobs?deployment={name}"), &alice)
            .await,
        StatusCode::OK,
    )
    .await;
    let kinds: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"provision") && kinds.contains(&"deploy"),
        "{kinds:?}"
    );
    expect_problem(
        server
            .get(&format!("/v1/jobs?deployment={name}"), &bob)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Other owners see nothing of it: not in the list, 404 by name and by id.
    let id = created["id"].as_str().unwrap();
    for path in [
        format!("/v1/deployments/{name}"),
        format!("/v1/deployments/{id}"),
    ] {
        expect_problem(server.get(&path, &bob).await, StatusCode::NOT_FOUND).await;
    }
    let bobs = expect_json(server.get("/v1/deployments", &bob).await, StatusCode::OK).await;
    assert_eq!(bobs, json!([]));
    let alices = expect_json(server.get("/v1/deployments", &alice).await, StatusCode::OK).await;
    assert_eq!(alices.as_array().unwrap().len(), 1);
    expect_json(
        server.get(&format!("/v1/deployments/{name}"), &admin).await,
        StatusCode::OK,
    )
    .await;
    for (method, path) in [
        (Method::DELETE, format!("/v1/deployments/{name}")),
        (Method::POST, format!("/v1/deployments/{name}/extend")),
    ] {
        let response = server
            .request(method, &path, Some(&bob))
            .json(&json!({"by": "1h"}))
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::NOT_FOUND).await;
    }

    // Bob's own spec of the same name: the name is taken, and he learns nothing else.
    let bobs_spec = spec(&name, "bob");
    for query in ["", "?dry_run=true"] {
        let response = server
            .request(Method::POST, &format!("/v1/deployments{query}"), Some(&bob))
            .header("content-type", "application/yaml")
            .body(bobs_spec.clone())
            .send()
            .await
            .unwrap();
        let text = response.text().await.unwrap();
        assert!(text.contains("is taken"), "{query}: {text}");
        assert!(
            !text.contains(id),
            "{query}: alice's deployment id leaked: {text}"
        );
    }

    // Extend, ack (refused: not leftovers), then tear down.
    let extended = expect_json(
        server
            .post(
                &format!("/v1/deployments/{name}/extend"),
                &alice,
                &json!({"by": "2h"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(extended["expires_at"].as_str().unwrap() > extended["was"].as_str().unwrap());
    let ack = server
        .post(
            &format!("/v1/deployments/{name}/ack"),
            &alice,
            &json!({"note": "checked"}),
        )
        .await;
    expect_problem(ack, StatusCode::CONFLICT).await;
    let teardown = server
        .request(
            Method::DELETE,
            &format!("/v1/deployments/{name}"),
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    let teardown: Value = expect_json(teardown, StatusCode::ACCEPTED).await;
    assert_eq!(teardown["state"], "tearing_down");
    wait_state(&server, &alice, &name, "torn_down").await;
    let view = expect_json(
        server.get(&format!("/v1/deployments/{name}"), &alice).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        view["containers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|container| container["state"] == "removed"),
        "{view}"
    );
    let again = server
        .request(
            Method::DELETE,
            &format!("/v1/deployments/{name}"),
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_json(again, StatusCode::OK).await["state"],
        "torn_down"
    );
    // The key still answers with the deployment it made, and makes no second one.
    let replay = expect_json(
        create(alice.clone(), yaml.clone(), "").await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(replay, created);
    let count: i64 = env
        .sql()
        .await
        .query_one("SELECT count(*) FROM deployments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    worker.stop().await;
}
