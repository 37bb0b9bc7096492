//! The image store against a real local registry (`docker-registry` on 127.0.0.1)
//! holding busybox images built by the test.

use std::collections::HashSet;
use std::sync::Once;
use std::time::Instant;

use skiff_e2e::registry::{ImageSpec, TestRegistry};
use skiff_node_agent::runtime::image::{ImageStore, PullPolicy, RegistryConfig};

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn store(dir: &std::path::Path, registry: &TestRegistry) -> ImageStore {
    install_crypto();
    ImageStore::open(
        dir,
        RegistryConfig {
            insecure: vec![registry.address()],
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn images_pull_by_tag_and_digest_and_are_cached() {
    let registry = TestRegistry::start().unwrap();
    let spec = ImageSpec {
        entrypoint: vec!["/bin/httpd".into()],
        cmd: vec!["-f".into(), "-p".into(), "80".into()],
        working_dir: Some("/www".into()),
        user: Some("1000".into()),
        ..ImageSpec::default()
    };
    let reference = registry.push_busybox_image("skiff/httpd:1", &spec).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = store(dir.path(), &registry);

    let started = Instant::now();
    let image = images
        .ensure(&reference, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    let cold = started.elapsed();
    assert_eq!(image.reference, reference);
    assert!(image.id.starts_with("sha256:"));
    assert_eq!(image.config.entrypoint, ["/bin/httpd"]);
    assert_eq!(image.config.cmd, ["-f", "-p", "80"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/www"));
    assert_eq!(image.config.user.as_deref(), Some("1000"));
    assert_eq!(image.layers.len(), 1);
    assert!(image.layers[0].join("bin/busybox").is_file());
    assert!(image.size > 100_000);

    // By digest: the same image.
    let digest = registry.digest("skiff/httpd:1").unwrap();
    let by_digest = format!("{}/skiff/httpd@{digest}", registry.address());
    let pinned = images
        .ensure(&by_digest, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(pinned.id, image.id);
    assert!(
        image.repo_digest.ends_with(&digest),
        "{}",
        image.repo_digest
    );

    // Cached: no registry needed for IfNotPresent and Never; Always needs it.
    drop(registry);
    let started = Instant::now();
    let cached = images
        .ensure(&reference, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    let warm = started.elapsed();
    assert_eq!(cached, image);
    images.ensure(&reference, PullPolicy::Never).await.unwrap();
    let error = images
        .ensure(&reference, PullPolicy::Always)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "ErrImagePull");
    eprintln!("pull+unpack cold {cold:?}, cached ensure {warm:?}");

    // A reopened store (agent restart) still knows the image.
    let reopened = ImageStore::open(dir.path(), RegistryConfig::default()).unwrap();
    assert_eq!(reopened.get(&reference), Some(image));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_images_and_bad_references_give_kubelet_reasons() {
    let registry = TestRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = store(dir.path(), &registry);
    let missing = format!("{}/skiff/missing:1", registry.address());
    let error = images
        .ensure(&missing, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "ErrImagePull");
    assert!(error.to_string().contains("skiff/missing"), "{error}");
    let error = images
        .ensure(&missing, PullPolicy::Never)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "ErrImageNeverPull");
    assert!(
        error
            .to_string()
            .contains("is not present with pull policy of Never")
    );
    let error = images
        .ensure("Not A Reference", PullPolicy::Always)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "InvalidImageName");
    // A registry that is not insecure-listed is spoken to over HTTPS, which fails.
    let plain = ImageStore::open(&dir.path().join("other"), RegistryConfig::default()).unwrap();
    let reference = registry
        .push_busybox_image("skiff/busybox:1", &ImageSpec::default())
        .unwrap();
    let error = plain
        .ensure(&reference, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "ErrImagePull");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_share_one_download_and_unused_images_are_collected() {
    let registry = TestRegistry::start().unwrap();
    let first = registry
        .push_busybox_image("skiff/a:1", &ImageSpec::default())
        .unwrap();
    let second = registry
        .push_busybox_image(
            "skiff/b:1",
            &ImageSpec {
                cmd: vec!["true".into()],
                ..ImageSpec::default()
            },
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = store(dir.path(), &registry);
    let pulls: Vec<_> = (0..8)
        .map(|_| {
            let images = images.clone();
            let reference = first.clone();
            tokio::spawn(async move { images.ensure(&reference, PullPolicy::Always).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for pull in pulls {
        ids.insert(pull.await.unwrap().unwrap().id);
    }
    assert_eq!(ids.len(), 1);
    // One download: exactly one copy of each blob, no temp files left.
    let tmp = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(tmp, 0);
    let a = images.get(&first).unwrap();
    let b = images
        .ensure(&second, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(images.list().len(), 2);

    let report = images
        .remove_unused(&HashSet::from([b.id.clone()]))
        .await
        .unwrap();
    assert_eq!(report.images, 1);
    assert!(images.get(&first).is_none());
    assert!(images.get(&second).is_some());
    // Layers the kept image shares stay; the config blob of the dropped one goes.
    for layer in &b.layers {
        assert!(layer.is_dir());
    }
    let config_blob = dir
        .path()
        .join("blobs/sha256")
        .join(a.id.trim_start_matches("sha256:"));
    assert!(!config_blob.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_hide_lower_files_in_a_real_overlay() {
    let registry = TestRegistry::start().unwrap();
    let reference = registry
        .push_busybox_image(
            "skiff/whiteout:1",
            &ImageSpec {
                whiteout_layer: true,
                ..ImageSpec::default()
            },
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = store(dir.path(), &registry);
    let image = images
        .ensure(&reference, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(image.layers.len(), 2);
    let mount = dir.path().join("mnt");
    let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
    for d in [&mount, &upper, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    let lower: Vec<String> = image
        .layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &mount,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .unwrap();
    let seen = (
        mount.join("www/index.html").exists(),
        mount.join("etc/opaque/lower").exists(),
        mount.join("etc/opaque/upper").exists(),
        mount.join("bin/busybox").exists(),
    );
    nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(seen, (false, false, true, true));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_layer_blob_is_fetched_again() {
    let registry = TestRegistry::start().unwrap();
    let reference = registry
        .push_busybox_image("skiff/c:1", &ImageSpec::default())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = store(dir.path(), &registry);
    let image = images.ensure(&reference, PullPolicy::Always).await.unwrap();
    // Corrupt the stored blob and drop the unpacked layer: the next pull must not
    // trust the blob.
    let layer_hex = image.layers[0].file_name().unwrap().to_owned();
    let blob = dir.path().join("blobs/sha256").join(&layer_hex);
    std::fs::write(&blob, b"garbage").unwrap();
    std::fs::remove_dir_all(&image.layers[0]).unwrap();
    let again = images.ensure(&reference, PullPolicy::Always).await.unwrap();
    assert!(again.layers[0].join("bin/busybox").is_file());
    assert_ne!(std::fs::read(&blob).unwrap(), b"garbage");
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_import_without_a_registry_and_bad_ones_are_refused() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(&dir.path().join("store"), RegistryConfig::default()).unwrap();

    // Our own OCI archive writer (what `skiff up` uses for its demo image).
    let archive = dir.path().join("demo.tar");
    let config = skiff_node_agent::runtime::image::ImageConfig {
        entrypoint: vec!["/bin/hello".into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    skiff_node_agent::runtime::image::import::write_archive(
        &archive,
        "example.com/demo/hello:1",
        &[("bin/hello", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)],
        &[("bin/hi".into(), "hello".into())],
        &config,
    )
    .unwrap();
    let imported = images.import_archive(&archive).await.unwrap();
    assert_eq!(imported.len(), 1);
    let image = images
        .ensure("example.com/demo/hello:1", PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(image.id, imported[0].id);
    assert_eq!(image.config.entrypoint, ["/bin/hello"]);
    assert!(image.layers[0].join("bin/hello").is_file());
    assert!(image.layers[0].join("bin/hi").is_symlink());

    // skopeo's OCI and docker archives of a registry image.
    let registry = TestRegistry::start().unwrap();
    let reference = registry
        .push_busybox_image("skiff/busybox:1", &ImageSpec::default())
        .unwrap();
    for (format, name) in [
        ("oci-archive", "example.com/oci/busybox:1"),
        ("docker-archive", "example.com/docker/busybox:1"),
    ] {
        let path = dir.path().join(format!("{format}.tar"));
        let output = std::process::Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("{format}:{}:{name}", path.display()))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let imported = images.import_archive(&path).await.unwrap();
        assert_eq!(imported.len(), 1, "{format}");
        let image = images
            .get(name)
            .unwrap_or_else(|| panic!("{format}: {name} missing"));
        assert!(image.layers[0].join("bin/busybox").is_file(), "{format}");
    }

    // Garbage and tampered archives are refused and store nothing.
    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, b"not a tar at all").unwrap();
    assert!(images.import_archive(&garbage).await.is_err());
    let unnamed = dir.path().join("unnamed.tar");
    skiff_node_agent::runtime::image::import::write_archive(&unnamed, "latest", &[], &[], &config)
        .unwrap();
    let error = images.import_archive(&unnamed).await.unwrap_err();
    assert!(error.to_string().contains("no repository"), "{error}");
    assert_eq!(images.list().len(), 3);
}
