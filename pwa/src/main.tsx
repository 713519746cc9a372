import { render } from "preact";
import { App } from "./app";
import { startOutbox } from "./lib/outbox";
import { registerServiceWorker } from "./lib/sw-register";
import "./styles.css";

registerServiceWorker();
startOutbox();
render(<App />, document.getElementById("app")!);
