// The vary view (being built).
export async function mount(root, {ui}) {
  root.append(ui.h("p", {class: "muted", text: "…"}));
}
